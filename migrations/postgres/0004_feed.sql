-- The change feed (feed.md): permanent, gapless records written by the `feed` consumer
-- (projections/feed.rs) with its checkpoint in projection_checkpoints.

CREATE TABLE feed_records (
    position       bigint PRIMARY KEY,
    cause_position bigint NOT NULL,
    kind           text   NOT NULL CHECK (kind IN ('household', 'individual')),
    household_id   text   NOT NULL,
    person_id      text,
    record         text   NOT NULL
);
CREATE INDEX feed_records_cause ON feed_records (cause_position);

-- Issued records never change and never go away, also not in a rebuild.
CREATE FUNCTION feed_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the feed is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER feed_no_update BEFORE UPDATE OR DELETE ON feed_records
    FOR EACH ROW EXECUTE FUNCTION feed_refuse_change();
CREATE TRIGGER feed_no_truncate BEFORE TRUNCATE ON feed_records
    FOR EACH STATEMENT EXECUTE FUNCTION feed_refuse_change();

-- What each household's records last said ('' = the household record), to tell a change from
-- a no-op and acquired/lost/changed from each other.
CREATE TABLE feed_last (
    household_id text NOT NULL,
    person_id    text NOT NULL,
    record       text NOT NULL,
    PRIMARY KEY (household_id, person_id)
);
