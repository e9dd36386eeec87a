-- The change feed (feed.md): permanent, gapless records written by the `feed` consumer
-- (projections/feed.rs) with its checkpoint in projection_checkpoints.

CREATE TABLE feed_records (
    position       INTEGER PRIMARY KEY,
    cause_position INTEGER NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('household', 'individual')),
    household_id   TEXT    NOT NULL,
    person_id      TEXT,
    record         TEXT    NOT NULL
);
CREATE INDEX feed_records_cause ON feed_records (cause_position);

-- Issued records never change and never go away, also not in a rebuild.
CREATE TRIGGER feed_no_update BEFORE UPDATE ON feed_records
BEGIN
    SELECT RAISE(ABORT, 'the feed is append-only: UPDATE refused');
END;
CREATE TRIGGER feed_no_delete BEFORE DELETE ON feed_records
BEGIN
    SELECT RAISE(ABORT, 'the feed is append-only: DELETE refused');
END;

-- What each household's records last said ('' = the household record), to tell a change from
-- a no-op and acquired/lost/changed from each other.
CREATE TABLE feed_last (
    household_id TEXT NOT NULL,
    person_id    TEXT NOT NULL,
    record       TEXT NOT NULL,
    PRIMARY KEY (household_id, person_id)
);
