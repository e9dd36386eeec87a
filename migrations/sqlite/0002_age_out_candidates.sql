-- Persons by (possibly corrected) birth date, for the 75th-birthday job.
CREATE INDEX events_birth_date ON events
    (coalesce(json_extract(payload, '$.birth_date'), json_extract(payload, '$.replacement.birth_date')))
    WHERE aggregate_type = 'person' AND event_type IN ('registered', 'corrected');
