-- Staff console sessions (console.md). See the PostgreSQL migration of the same number for
-- the reasons; the shapes are the same.

CREATE TABLE console_sessions (
    id_hash      text PRIMARY KEY,
    principal    text NOT NULL,
    roles        text NOT NULL,
    source       text NOT NULL,
    csrf         text NOT NULL,
    terminal     text NOT NULL,
    created_at   text NOT NULL,
    last_seen_at text NOT NULL,
    ended_at     text
) STRICT;
CREATE INDEX console_sessions_principal ON console_sessions (principal);

CREATE TABLE console_sign_ins (
    state_hash    text PRIMARY KEY,
    pkce_verifier text NOT NULL,
    nonce         text NOT NULL,
    next          text NOT NULL,
    created_at    text NOT NULL
) STRICT;

-- The status page finds the last export without scanning the access log.
CREATE INDEX access_records_kind ON access_records (kind, id);
