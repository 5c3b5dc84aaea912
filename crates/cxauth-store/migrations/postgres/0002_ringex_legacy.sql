-- cxauth schema, version 2 (the PostgreSQL twin of migrations/sqlite/0002): RingEX token exchange, the built-in RingEX emulator, legacy login.

-- The RingEX extension id a user answers to (the token exchange maps it to the cxauth user).
ALTER TABLE users ADD COLUMN rc_user_id BIGINT;
-- Unique where set; several NULLs are allowed.
CREATE UNIQUE INDEX users_by_rc_user_id ON users (rc_user_id);

-- Sessions made by the RingEX token exchange keep answering `ssoLogin: true` when refreshed.
ALTER TABLE sessions ADD COLUMN sso_login BOOLEAN NOT NULL DEFAULT FALSE;

-- Legacy portal auth tokens (`X-Auth-Token: <uuid>`), stored only as keyed digests. Sliding:
-- each use moves expires_at to now + lifetime_ms.
CREATE TABLE legacy_tokens (
    digest      BYTEA PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    lifetime_ms BIGINT NOT NULL
);
CREATE INDEX legacy_tokens_by_expiry ON legacy_tokens (expires_at);

-- RingEX emulator: OAuth apps (the client secret as an Argon2id PHC string).
CREATE TABLE ringex_apps (
    client_id   TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- RingEX emulator: JWT credentials of users, stored only as SHA-256 digests.
CREATE TABLE ringex_jwts (
    digest     BYTEA PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL
);

-- RingEX emulator: access tokens it issued, stored only as keyed digests.
CREATE TABLE ringex_tokens (
    digest     BYTEA PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX ringex_tokens_by_expiry ON ringex_tokens (expires_at);
