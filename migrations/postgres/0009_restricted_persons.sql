-- Every answer's access record says whether a person in it has a DV restriction in force
-- (access.md `restricted`): a lookup per answer. Only the few restricted current versions are
-- in this index, so the lookup never scans the person table (measured: 0.66 ms a call, 87 % of
-- the database's time under timeline reads, before it).
CREATE INDEX proj_person_restricted ON proj_person (person_id)
    WHERE known_to IS NULL AND disclosure_restricted_from IS NOT NULL;
