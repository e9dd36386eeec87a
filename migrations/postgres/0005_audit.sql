-- The audit trail (audit.md), written by the `audit` chainer (src/audit/chainer.rs) with its
-- checkpoint in projection_checkpoints. Derived from the log, but never rebuilt: it is what
-- the signed checkpoints vouch for.

-- One row per log position: the RFC 9162 leaf hash, the linear chain hash, and the hashes of
-- the perfect Merkle subtrees this leaf completes (levels 1, 2, … up: 32 bytes each, as many
-- as the trailing zero bits of the position). Subtree (level l, index i) is stored at
-- position (i + 1)·2^l; with the leaf hashes they answer every proof.
CREATE TABLE audit_entries (
    position   bigint PRIMARY KEY CHECK (position >= 1),
    leaf_hash  bytea  NOT NULL CHECK (length(leaf_hash) = 32),
    chain_hash bytea  NOT NULL CHECK (length(chain_hash) = 32),
    subtrees   bytea  NOT NULL
);

-- Signed checkpoints; `public_key` is the key that signed (one per deployment).
CREATE TABLE audit_checkpoints (
    size       bigint PRIMARY KEY CHECK (size >= 1),
    origin     text NOT NULL,
    root       text NOT NULL,
    chain_head text NOT NULL,
    timestamp  text NOT NULL,
    signature  text NOT NULL,
    public_key text NOT NULL
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
