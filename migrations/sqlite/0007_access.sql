-- Identity, access records and My Number protection (access.md). See the PostgreSQL
-- migration of the same number for the reasons; the shapes are the same.

CREATE TABLE access_tokens (
    name       text PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,
    roles      text NOT NULL,
    created_at text NOT NULL,
    created_by text NOT NULL,
    expires_at text,
    revoked_at text
) STRICT;

CREATE TABLE access_head (
    id        integer PRIMARY KEY CHECK (id = 1),
    last_id   integer NOT NULL,
    last_hash blob    NOT NULL
) STRICT;
INSERT INTO access_head (id, last_id, last_hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE access_records (
    id         integer PRIMARY KEY,
    at         text    NOT NULL,
    actor      text    NOT NULL,
    roles      text    NOT NULL,
    terminal   text    NOT NULL,
    screen     text    NOT NULL,
    kind       text    NOT NULL,
    persons    text    NOT NULL,
    outcome    integer NOT NULL,
    my_number  integer NOT NULL,
    restricted integer NOT NULL,
    request_id text    NOT NULL,
    path       text,
    export     text,
    chain_hash blob    NOT NULL
) STRICT;
CREATE INDEX access_records_at ON access_records (at);
CREATE INDEX access_records_actor ON access_records (actor, id);

CREATE TABLE access_record_persons (
    person_id text    NOT NULL,
    record_id integer NOT NULL,
    PRIMARY KEY (person_id, record_id)
) STRICT;
CREATE INDEX access_record_persons_record ON access_record_persons (record_id);

CREATE TABLE access_purges (
    through_id   integer PRIMARY KEY,
    through_hash blob NOT NULL,
    before       text NOT NULL,
    at           text NOT NULL,
    actor        text NOT NULL
) STRICT;

CREATE TRIGGER access_records_no_update BEFORE UPDATE ON access_records
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only: UPDATE refused');
END;
CREATE TRIGGER access_records_purge_only BEFORE DELETE ON access_records
    WHEN OLD.id > (SELECT coalesce(max(through_id), 0) FROM access_purges)
      OR OLD.at >= strftime('%Y-%m-%dT%H:%M:%S', 'now', '-5 years')
BEGIN
    SELECT RAISE(ABORT, 'the access record is not purgeable (records are kept five years)');
END;
CREATE TRIGGER access_record_persons_no_update BEFORE UPDATE ON access_record_persons
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only: UPDATE refused');
END;
CREATE TRIGGER access_record_persons_purge_only BEFORE DELETE ON access_record_persons
    WHEN OLD.record_id > (SELECT coalesce(max(through_id), 0) FROM access_purges)
BEGIN
    SELECT RAISE(ABORT, 'the access record is not purgeable');
END;
CREATE TRIGGER access_purges_no_update BEFORE UPDATE ON access_purges
BEGIN
    SELECT RAISE(ABORT, 'purge markers are append-only: UPDATE refused');
END;
CREATE TRIGGER access_purges_no_delete BEFORE DELETE ON access_purges
BEGIN
    SELECT RAISE(ABORT, 'purge markers are append-only: DELETE refused');
END;

CREATE TABLE my_numbers (
    commitment  text PRIMARY KEY,
    person_id   text    NOT NULL,
    nonce       blob    NOT NULL,
    sealed      blob    NOT NULL,
    blind_index text    NOT NULL,
    position    integer NOT NULL,
    created_at  text    NOT NULL
) STRICT;
CREATE INDEX my_numbers_person ON my_numbers (person_id);
CREATE INDEX my_numbers_blind_index ON my_numbers (blind_index);
CREATE INDEX my_numbers_created_at ON my_numbers (created_at);

ALTER TABLE proj_person ADD COLUMN name_kana_key text;
CREATE INDEX proj_person_kana_key ON proj_person (name_kana_key) WHERE known_to IS NULL;
CREATE INDEX proj_person_name ON proj_person (name) WHERE known_to IS NULL;
CREATE INDEX proj_person_birth_date ON proj_person (birth_date) WHERE known_to IS NULL;
