-- The audit trail (audit.md), SQLite flavour; see migrations/postgres/0005_audit.sql.

CREATE TABLE audit_entries (
    position   integer PRIMARY KEY CHECK (position >= 1),
    leaf_hash  blob    NOT NULL CHECK (length(leaf_hash) = 32),
    chain_hash blob    NOT NULL CHECK (length(chain_hash) = 32),
    subtrees   blob    NOT NULL
) STRICT;

CREATE TABLE audit_checkpoints (
    size       integer PRIMARY KEY CHECK (size >= 1),
    origin     text NOT NULL,
    root       text NOT NULL,
    chain_head text NOT NULL,
    timestamp  text NOT NULL,
    signature  text NOT NULL,
    public_key text NOT NULL
) STRICT;

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE refused');
END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE refused');
END;
