-- Persons by (possibly corrected) birth date, for the 75th-birthday job: it looks only at
-- persons old enough, not at the whole register.
CREATE INDEX events_birth_date ON events
    ((COALESCE(payload ->> 'birth_date', payload -> 'replacement' ->> 'birth_date')))
    WHERE aggregate_type = 'person' AND event_type IN ('registered', 'corrected');
