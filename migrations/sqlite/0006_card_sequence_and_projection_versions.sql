-- The deployment's card-number sequences as state of their own (domain.md §5): one row per
-- card symbol and number width, moved in the same transaction as the append that issues a
-- number. Numbers typed in explicitly (`card_number_assigned` from the API) never move it.
CREATE TABLE card_sequence (
    symbol text    NOT NULL,
    width  integer NOT NULL CHECK (width >= 1),
    last   integer NOT NULL CHECK (last >= 0),
    PRIMARY KEY (symbol, width)
) STRICT;
-- Ledgers that issued numbers before this table existed continue after the highest number
-- the ledger itself issued (actor `system`), whatever was typed in by hand.
INSERT INTO card_sequence (symbol, width, last)
SELECT json_extract(payload, '$.symbol'), length(json_extract(payload, '$.number')),
       max(CAST(json_extract(payload, '$.number') AS INTEGER))
  FROM events
 WHERE event_type = 'card_number_assigned' AND json_extract(metadata, '$.actor') = 'system'
   AND json_extract(payload, '$.number') NOT GLOB '*[^0-9]*'
   AND length(json_extract(payload, '$.number')) BETWEEN 1 AND 18
 GROUP BY 1, 2;

-- A projection whose rows' meaning changed is rebuilt at start when its stored version is
-- older than the code's (see src/projections/runner.rs).
ALTER TABLE projection_checkpoints ADD COLUMN version INTEGER NOT NULL DEFAULT 1;

-- The 75th-birthday confirmation in force (for the daily job's candidates).
ALTER TABLE proj_person ADD COLUMN age_reached_on TEXT;
-- Persons whose current ward period ends on their 75th birthday, by that day.
CREATE INDEX proj_run_age_loss ON proj_run (to_date) WHERE known_to IS NULL AND loss_by_age;
