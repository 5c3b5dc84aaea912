-- cxauth schema, version 7 (the PostgreSQL twin of migrations/sqlite/0007): the RingEX emulator's refresh grant and revoke endpoint (issue 16).

-- Each login at the emulator (a password or JWT grant) is one RingEX "endpoint": its access
-- tokens carry the login's id (its `endpoint_id`) and the client that obtained it, so a revoke
-- ends the whole login and only its own client may end it. NULL on tokens issued before.
ALTER TABLE ringex_tokens ADD COLUMN login_id TEXT;
ALTER TABLE ringex_tokens ADD COLUMN client_id TEXT;
CREATE INDEX ringex_tokens_by_login ON ringex_tokens (login_id);

-- The one live refresh token of each emulator login, stored only as a keyed digest. A refresh
-- replaces the digest in place (one UPDATE, so two concurrent refreshes cannot both win) and
-- restarts expires_at, as RingEX does.
CREATE TABLE ringex_refresh_tokens (
    login_id   TEXT PRIMARY KEY,
    digest     BYTEA NOT NULL UNIQUE,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    client_id  TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ringex_refresh_tokens_by_expiry ON ringex_refresh_tokens (expires_at);
CREATE INDEX ringex_refresh_tokens_by_user ON ringex_refresh_tokens (user_id);
