-- cxauth schema, version 1. Times are epoch milliseconds from the server's injected clock.
-- Kept to portable SQL so the PostgreSQL migration can mirror it line for line.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Ed25519 signing keys; the private half sealed with AES-256-GCM under the master key.
CREATE TABLE signing_keys (
    kid                TEXT PRIMARY KEY,
    public_key         BLOB NOT NULL,
    sealed_private_key BLOB NOT NULL,
    created_at         BIGINT NOT NULL
);

-- Main accounts (main_id NULL, id a multiple of 10000) and their sub-accounts (id = main + n).
CREATE TABLE accounts (
    id         BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    main_id    BIGINT REFERENCES accounts (id),
    is_active  BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX accounts_by_main ON accounts (main_id);

CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL UNIQUE,
    platform_id     TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    first_name      TEXT NOT NULL,
    last_name       TEXT NOT NULL,
    enabled         BOOLEAN NOT NULL,
    parent_id       BIGINT REFERENCES users (id),
    -- ancestor ids from the root down joined by '.', '' for a root user
    parent_path     TEXT NOT NULL,
    main_account_id BIGINT NOT NULL REFERENCES accounts (id),
    -- role names joined by ','
    roles           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX users_by_parent_path ON users (parent_path);

CREATE TABLE user_grants (
    user_id    BIGINT NOT NULL REFERENCES users (id),
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    PRIMARY KEY (user_id, account_id)
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users (id),
    created_at     BIGINT NOT NULL,
    -- when the newest refresh token of the session expires; after it the row can be purged
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Refresh tokens, stored only as HMAC-SHA-256 digests under a key derived from the master key.
CREATE TABLE refresh_tokens (
    digest     BLOB PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- set when a successor was issued; the token then only works within the grace window
    rotated_at BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Permanent API tokens: a keyed digest to look them up, AES-256-GCM ciphertext to list them.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    digest     BLOB NOT NULL UNIQUE,
    sealed     BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, id);
