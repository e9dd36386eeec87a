-- Identity, access records and My Number protection (access.md).

-- Local bearer tokens: one named principal each; only the SHA-256 of the token is kept.
CREATE TABLE access_tokens (
    name       text PRIMARY KEY,
    token_hash text        NOT NULL UNIQUE,
    roles      json        NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text        NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz
);

-- The access log (アクセス記録): gapless ids and a hash chain like the event log's. The head
-- row is locked by the writer of each batch, so ids and hashes follow commit order.
CREATE TABLE access_head (
    id        integer PRIMARY KEY CHECK (id = 1),
    last_id   bigint  NOT NULL,
    last_hash bytea   NOT NULL
);
INSERT INTO access_head (id, last_id, last_hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE access_records (
    id         bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text        NOT NULL,
    roles      json        NOT NULL,
    terminal   text        NOT NULL,
    screen     text        NOT NULL,
    kind       text        NOT NULL,
    persons    json        NOT NULL,
    outcome    bigint      NOT NULL,
    my_number  boolean     NOT NULL,
    restricted boolean     NOT NULL,
    request_id text        NOT NULL,
    path       text,
    export     json,
    chain_hash bytea       NOT NULL
);
CREATE INDEX access_records_at ON access_records (at);
CREATE INDEX access_records_actor ON access_records (actor, id);

-- アクセス対象者 by person, for "who looked at this resident".
CREATE TABLE access_record_persons (
    person_id text   NOT NULL,
    record_id bigint NOT NULL,
    PRIMARY KEY (person_id, record_id)
);
CREATE INDEX access_record_persons_record ON access_record_persons (record_id);

-- A purge removes a prefix of the log and leaves a marker holding the chain hash at its end,
-- from which the remaining records still verify.
CREATE TABLE access_purges (
    through_id   bigint PRIMARY KEY,
    through_hash bytea       NOT NULL,
    before       text        NOT NULL,
    at           timestamptz NOT NULL,
    actor        text        NOT NULL
);

-- Append-only: UPDATE and TRUNCATE are refused; DELETE only of records covered by a purge
-- marker and at least five years old (5年間記録).
CREATE FUNCTION access_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the access log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE FUNCTION access_guard_purge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.id > (SELECT coalesce(max(through_id), 0) FROM access_purges)
       OR OLD.at >= now() - interval '5 years' THEN
        RAISE EXCEPTION 'access record % is not purgeable (records are kept five years)', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$$;
CREATE FUNCTION access_guard_purge_persons() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.record_id > (SELECT coalesce(max(through_id), 0) FROM access_purges) THEN
        RAISE EXCEPTION 'access record % is not purgeable', OLD.record_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$$;
CREATE TRIGGER access_records_no_update BEFORE UPDATE ON access_records
    FOR EACH ROW EXECUTE FUNCTION access_refuse_change();
CREATE TRIGGER access_records_purge_only BEFORE DELETE ON access_records
    FOR EACH ROW EXECUTE FUNCTION access_guard_purge();
CREATE TRIGGER access_records_no_truncate BEFORE TRUNCATE ON access_records
    FOR EACH STATEMENT EXECUTE FUNCTION access_refuse_change();
CREATE TRIGGER access_record_persons_no_update BEFORE UPDATE ON access_record_persons
    FOR EACH ROW EXECUTE FUNCTION access_refuse_change();
CREATE TRIGGER access_record_persons_purge_only BEFORE DELETE ON access_record_persons
    FOR EACH ROW EXECUTE FUNCTION access_guard_purge_persons();
CREATE TRIGGER access_record_persons_no_truncate BEFORE TRUNCATE ON access_record_persons
    FOR EACH STATEMENT EXECUTE FUNCTION access_refuse_change();
CREATE TRIGGER access_purges_no_change BEFORE UPDATE OR DELETE ON access_purges
    FOR EACH ROW EXECUTE FUNCTION access_refuse_change();
CREATE TRIGGER access_purges_no_truncate BEFORE TRUNCATE ON access_purges
    FOR EACH STATEMENT EXECUTE FUNCTION access_refuse_change();

-- My Numbers, sealed: the salt of the commitment is encrypted together with the number, so the
-- commitment in the log cannot be tested against guessed numbers from the database alone; the
-- blind index (HMAC under a key derived from the vault key) finds a person by number. Rows of
-- my_number_vault (plain salts) are moved here by the ledger at start, with the vault key.
CREATE TABLE my_numbers (
    commitment  text PRIMARY KEY,
    person_id   text        NOT NULL,
    nonce       bytea       NOT NULL,
    sealed      bytea       NOT NULL,
    blind_index text        NOT NULL,
    position    bigint      NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX my_numbers_person ON my_numbers (person_id);
CREATE INDEX my_numbers_blind_index ON my_numbers (blind_index);
CREATE INDEX my_numbers_created_at ON my_numbers (created_at);

-- Search (api.md): the kana name without spaces, for prefix matches.
ALTER TABLE proj_person ADD COLUMN name_kana_key text;
-- Prefix searches compare in code-point order (COLLATE "C"), as SQLite's BINARY does.
CREATE INDEX proj_person_kana_key ON proj_person ((name_kana_key COLLATE "C")) WHERE known_to IS NULL;
CREATE INDEX proj_person_name ON proj_person ((name COLLATE "C")) WHERE known_to IS NULL;
CREATE INDEX proj_person_birth_date ON proj_person (birth_date) WHERE known_to IS NULL;
