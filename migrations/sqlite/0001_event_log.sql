-- The global event log, SQLite flavour: sqlite-es's `events` shape (STRICT, payload as text)
-- plus `position` and `recorded_at` (UTC, six fractional digits, fixed width so text order is
-- time order). Writers are serialised by BEGIN IMMEDIATE.

CREATE TABLE log_head (
    id               integer PRIMARY KEY CHECK (id = 1),
    last_position    integer NOT NULL,
    last_recorded_at text    NOT NULL
) STRICT;
INSERT INTO log_head (id, last_position, last_recorded_at) VALUES (1, 0, '1970-01-01T00:00:00.000000Z');

CREATE TABLE events (
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 1) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    -- NULL only inside the inserting statement of a writer that does not assign it (the
    -- trigger below fills it before the statement ends).
    position       integer CHECK (position >= 1),
    recorded_at    text,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;
CREATE UNIQUE INDEX events_position ON events (position);

CREATE INDEX events_household_ref ON events
    (coalesce(json_extract(payload, '$.household_id'), json_extract(payload, '$.replacement.household_id')))
    WHERE aggregate_type = 'person';

CREATE UNIQUE INDEX events_card_number ON events
    (json_extract(payload, '$.symbol'), json_extract(payload, '$.number'))
    WHERE event_type = 'card_number_assigned';
CREATE UNIQUE INDEX events_branch_number ON events
    (json_extract(payload, '$.symbol'), json_extract(payload, '$.number'), json_extract(payload, '$.branch'))
    WHERE event_type = 'branch_number_issued';

CREATE TRIGGER events_assign_position AFTER INSERT ON events WHEN NEW.position IS NULL
BEGIN
    UPDATE log_head
       SET last_position = last_position + 1,
           last_recorded_at = max(last_recorded_at, strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z');
    UPDATE events
       SET position = (SELECT last_position FROM log_head),
           recorded_at = (SELECT last_recorded_at FROM log_head)
     WHERE rowid = NEW.rowid;
END;

-- Append-only: the one permitted update is the position assignment above.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events WHEN OLD.position IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: UPDATE refused');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: DELETE refused');
END;

CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint text    NOT NULL,
    response    text    NOT NULL,
    position    integer NOT NULL,
    created_at  text    NOT NULL
) STRICT;

CREATE TABLE my_number_vault (
    commitment text PRIMARY KEY,
    person_id  text    NOT NULL,
    salt       blob    NOT NULL,
    nonce      blob    NOT NULL,
    ciphertext blob    NOT NULL,
    position   integer NOT NULL,
    created_at text    NOT NULL
) STRICT;
CREATE INDEX my_number_vault_person ON my_number_vault (person_id);
