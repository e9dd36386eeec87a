-- The global event log. The `events` table has postgres-es's shape (so its repository can read
-- and write it) plus what the global log needs: a dense, gapless, permanent `position` and the
-- commit instant `recorded_at`.

-- One row, locked by every append: positions are assigned in commit order without gaps
-- (engineering-notes option (a)); `last_recorded_at` keeps recorded_at non-decreasing in
-- position order, so an as-of instant always selects a prefix of the log.
CREATE TABLE log_head (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_position    bigint      NOT NULL,
    last_recorded_at timestamptz NOT NULL
);
INSERT INTO log_head (id, last_position, last_recorded_at) VALUES (true, 0, 'epoch');

CREATE TABLE events (
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 1) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigint CHECK (position >= 1) NOT NULL,
    recorded_at    timestamptz                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX events_position ON events (position);

-- Household membership look-ups (fold-on-demand reads; the projections take over later).
CREATE INDEX events_household_ref ON events
    ((COALESCE(payload ->> 'household_id', payload -> 'replacement' ->> 'household_id')))
    WHERE aggregate_type = 'person';

-- A card symbol+number belongs to one household; a branch number to one person under it.
CREATE UNIQUE INDEX events_card_number ON events ((payload ->> 'symbol'), (payload ->> 'number'))
    WHERE event_type = 'card_number_assigned';
CREATE UNIQUE INDEX events_branch_number ON events
    ((payload ->> 'symbol'), (payload ->> 'number'), (payload ->> 'branch'))
    WHERE event_type = 'branch_number_issued';

-- Writers that do not assign positions themselves (e.g. postgres-es's own repository) get one
-- under the same lock.
CREATE FUNCTION events_assign_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE log_head
       SET last_position = last_position + 1,
           last_recorded_at = greatest(last_recorded_at, clock_timestamp())
     RETURNING last_position, last_recorded_at INTO NEW.position, NEW.recorded_at;
    RETURN NEW;
END
$$;
CREATE TRIGGER events_assign_position BEFORE INSERT ON events
    FOR EACH ROW WHEN (NEW.position IS NULL) EXECUTE FUNCTION events_assign_position();

-- The log is append-only: the database itself refuses UPDATE, DELETE and TRUNCATE.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Idempotency-Key: written in the transaction of the append it guards.
CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint text        NOT NULL,
    response    json        NOT NULL,
    position    bigint      NOT NULL,
    created_at  timestamptz NOT NULL
);

-- My Numbers, encrypted, outside the log (audit.md): erasable without breaking the chain.
CREATE TABLE my_number_vault (
    commitment text PRIMARY KEY,
    person_id  text        NOT NULL,
    salt       bytea       NOT NULL,
    nonce      bytea       NOT NULL,
    ciphertext bytea       NOT NULL,
    position   bigint      NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX my_number_vault_person ON my_number_vault (person_id);
