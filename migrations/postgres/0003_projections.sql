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
    name       text PRIMARY KEY,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A new version only when an attribute changes (the stream's last sequence at a position is
-- read from the log).
CREATE TABLE proj_person (
    person_id                  text NOT NULL,
    known_from                 bigint NOT NULL,
    known_to                   bigint,
    name                       text NOT NULL,
    name_kana                  text NOT NULL,
    real_name                  text,
    real_name_kana             text,
    birth_date                 text NOT NULL,
    sex                        text NOT NULL,
    sex_on_back                boolean NOT NULL,
    deceased_on                text,
    disclosure_restricted_from text,
    PRIMARY KEY (person_id, known_from)
);

-- Ward application periods (適用期間), whole: what GET /v1/persons/{id} describes.
CREATE TABLE proj_run (
    person_id          text NOT NULL,
    known_from         bigint NOT NULL,
    known_to           bigint,
    ordinal            bigint NOT NULL,
    from_date          text NOT NULL,
    to_date            text,
    acquisition_reason text NOT NULL,
    loss_reason        text,
    loss_code          text,
    qualified_on       text NOT NULL,
    disqualified_on    text,
    loss_by_age        boolean NOT NULL,
    PRIMARY KEY (person_id, known_from, ordinal)
);

-- The same periods split at household changes: the timeline's intervals.
CREATE TABLE proj_interval (
    person_id          text NOT NULL,
    known_from         bigint NOT NULL,
    known_to           bigint,
    ordinal            bigint NOT NULL,
    from_date          text NOT NULL,
    to_date            text,
    acquisition_reason text NOT NULL,
    loss_reason        text,
    loss_code          text,
    qualified_on       text NOT NULL,
    disqualified_on    text,
    household_id       text,
    PRIMARY KEY (person_id, known_from, ordinal)
);

-- Household membership periods: [from_date, to_date), to_date NULL while current.
CREATE TABLE proj_membership (
    person_id    text NOT NULL,
    known_from   bigint NOT NULL,
    known_to     bigint,
    ordinal      bigint NOT NULL,
    household_id text NOT NULL,
    from_date    text NOT NULL,
    to_date      text,
    PRIMARY KEY (person_id, known_from, ordinal)
);
CREATE INDEX proj_membership_household ON proj_membership (household_id, known_from);

-- Household facts never change once recorded: the position is their knowledge time.
CREATE TABLE proj_household_fact (
    household_id   text NOT NULL,
    position       bigint NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('head', 'designation', 'revocation')),
    effective_date text NOT NULL,
    person_id      text,
    PRIMARY KEY (household_id, position)
);

CREATE TABLE proj_card (
    household_id text PRIMARY KEY,
    symbol       text NOT NULL,
    number       text NOT NULL,
    position     bigint NOT NULL,
    UNIQUE (symbol, number)
);

CREATE TABLE proj_branch (
    symbol       text NOT NULL,
    number       text NOT NULL,
    branch       text NOT NULL,
    person_id    text NOT NULL,
    household_id text NOT NULL,
    position     bigint NOT NULL,
    PRIMARY KEY (symbol, number, branch),
    UNIQUE (symbol, number, person_id)
);
CREATE INDEX proj_branch_household ON proj_branch (household_id, person_id);

-- Current eligibility (latest knowledge, today in Asia/Tokyo), for ward staff's own queries.
CREATE VIEW current_eligibility AS
WITH today AS (SELECT to_char((now() AT TIME ZONE 'Asia/Tokyo')::date, 'YYYY-MM-DD') AS d)
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
