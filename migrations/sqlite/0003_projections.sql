-- Read models built from the log by durable consumers (projections/). Every table here can be
-- dropped and rebuilt from the events; none is a source of truth.
--
-- Bitemporal rows: `known_from`/`known_to` are log positions (knowledge time: the row holds
-- for readers of the log prefix known_from <= P < known_to); the dates inside a row are
-- valid time. An as-of instant T reads at P = the last position recorded at or before T.

-- as-of instant -> log position
CREATE INDEX events_recorded_at ON events (recorded_at);

-- Each projection's position: written in the same transaction as its rows.
CREATE TABLE projection_checkpoints (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- A new version only when an attribute changes (the stream's last sequence at a position is
-- read from the log).
CREATE TABLE proj_person (
    person_id                  TEXT NOT NULL,
    known_from                 INTEGER NOT NULL,
    known_to                   INTEGER,
    name                       TEXT NOT NULL,
    name_kana                  TEXT NOT NULL,
    real_name                  TEXT,
    real_name_kana             TEXT,
    birth_date                 TEXT NOT NULL,
    sex                        TEXT NOT NULL,
    sex_on_back                INTEGER NOT NULL,
    deceased_on                TEXT,
    disclosure_restricted_from TEXT,
    PRIMARY KEY (person_id, known_from)
);

-- Ward application periods (適用期間), whole: what GET /v1/persons/{id} describes.
CREATE TABLE proj_run (
    person_id          TEXT NOT NULL,
    known_from         INTEGER NOT NULL,
    known_to           INTEGER,
    ordinal            INTEGER NOT NULL,
    from_date          TEXT NOT NULL,
    to_date            TEXT,
    acquisition_reason TEXT NOT NULL,
    loss_reason        TEXT,
    loss_code          TEXT,
    qualified_on       TEXT NOT NULL,
    disqualified_on    TEXT,
    loss_by_age        INTEGER NOT NULL,
    PRIMARY KEY (person_id, known_from, ordinal)
);

-- The same periods split at household changes: the timeline's intervals.
CREATE TABLE proj_interval (
    person_id          TEXT NOT NULL,
    known_from         INTEGER NOT NULL,
    known_to           INTEGER,
    ordinal            INTEGER NOT NULL,
    from_date          TEXT NOT NULL,
    to_date            TEXT,
    acquisition_reason TEXT NOT NULL,
    loss_reason        TEXT,
    loss_code          TEXT,
    qualified_on       TEXT NOT NULL,
    disqualified_on    TEXT,
    household_id       TEXT,
    PRIMARY KEY (person_id, known_from, ordinal)
);

-- Household membership periods: [from_date, to_date), to_date NULL while current.
CREATE TABLE proj_membership (
    person_id    TEXT NOT NULL,
    known_from   INTEGER NOT NULL,
    known_to     INTEGER,
    ordinal      INTEGER NOT NULL,
    household_id TEXT NOT NULL,
    from_date    TEXT NOT NULL,
    to_date      TEXT,
    PRIMARY KEY (person_id, known_from, ordinal)
);
CREATE INDEX proj_membership_household ON proj_membership (household_id, known_from);

-- Household facts never change once recorded: the position is their knowledge time.
CREATE TABLE proj_household_fact (
    household_id   TEXT NOT NULL,
    position       INTEGER NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('head', 'designation', 'revocation')),
    effective_date TEXT NOT NULL,
    person_id      TEXT,
    PRIMARY KEY (household_id, position)
);

CREATE TABLE proj_card (
    household_id TEXT PRIMARY KEY,
    symbol       TEXT NOT NULL,
    number       TEXT NOT NULL,
    position     INTEGER NOT NULL,
    UNIQUE (symbol, number)
);

CREATE TABLE proj_branch (
    symbol       TEXT NOT NULL,
    number       TEXT NOT NULL,
    branch       TEXT NOT NULL,
    person_id    TEXT NOT NULL,
    household_id TEXT NOT NULL,
    position     INTEGER NOT NULL,
    PRIMARY KEY (symbol, number, branch),
    UNIQUE (symbol, number, person_id)
);
CREATE INDEX proj_branch_household ON proj_branch (household_id, person_id);

-- Current eligibility (latest knowledge, today in Asia/Tokyo), for ward staff's own queries.
CREATE VIEW current_eligibility AS
WITH today AS (SELECT date('now', '+9 hours') AS d)
SELECT p.person_id,
       r.person_id IS NOT NULL AS insured,
       r.qualified_on, r.disqualified_on, r.from_date AS applied_from, r.to_date AS applied_until,
       r.loss_reason, r.loss_code,
       i.household_id, c.symbol AS card_symbol, c.number AS card_number, b.branch
FROM proj_person p
CROSS JOIN today
LEFT JOIN proj_run r ON r.person_id = p.person_id AND r.known_to IS NULL
     AND r.from_date <= today.d AND (r.to_date IS NULL OR today.d < r.to_date)
LEFT JOIN proj_interval i ON i.person_id = p.person_id AND i.known_to IS NULL
     AND i.from_date <= today.d AND (i.to_date IS NULL OR today.d < i.to_date)
LEFT JOIN proj_card c ON c.household_id = i.household_id
LEFT JOIN proj_branch b ON b.household_id = i.household_id AND b.person_id = p.person_id
WHERE p.known_to IS NULL;
