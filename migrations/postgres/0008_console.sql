-- Staff console sessions (console.md).
--
-- A session is server-side: the browser holds only a random id, the table its SHA-256 (a
-- database reader cannot take over a session). The principal and roles are copied at sign-in
-- (as a bearer token's are at each request); the CSRF token is bound to the session. A session
-- ends at sign-out or after the idle period; ended rows are kept for the operator (they hold
-- no personal data) and removed by age.
CREATE TABLE console_sessions (
    id_hash      text PRIMARY KEY,
    principal    text NOT NULL,
    roles        jsonb NOT NULL,
    source       text NOT NULL,
    csrf         text NOT NULL,
    terminal     text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    ended_at     timestamptz
);
CREATE INDEX console_sessions_principal ON console_sessions (principal);

-- OpenID Connect sign-ins in flight: the state (hashed), the PKCE verifier and the nonce of
-- one authorization request, taken once by the callback. Kept in the database so that any
-- instance behind a load balancer can complete the sign-in.
CREATE TABLE console_sign_ins (
    state_hash    text PRIMARY KEY,
    pkce_verifier text NOT NULL,
    nonce         text NOT NULL,
    next          text NOT NULL,
    created_at    timestamptz NOT NULL
);

-- The status page finds the last export without scanning the access log.
CREATE INDEX access_records_kind ON access_records (kind, id);
