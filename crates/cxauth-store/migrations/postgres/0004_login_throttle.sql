-- (The PostgreSQL twin of migrations/sqlite/0004.)
-- Login throttle budgets (used by PostgreSQL deployments, so every instance shares one budget;
-- a SQLite deployment keeps them in memory, but the table exists so both schemas stay alike).
-- Keys are keyed digests: an attempted username (possibly a mistyped password) or an address is
-- never stored in clear.
CREATE TABLE login_throttle (
    throttle_key  BYTEA PRIMARY KEY,
    failures      BIGINT NOT NULL,
    last_failure  BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX login_throttle_by_expiry ON login_throttle (expires_at);

-- Addresses each user logged in from successfully: attempts from them get a budget of their
-- own, so failures from elsewhere never refuse the real user there. `pair` is a keyed digest of
-- (username, address).
CREATE TABLE login_addresses (
    pair       BYTEA PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_login BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX login_addresses_by_user ON login_addresses (user_id, last_login);
CREATE INDEX login_addresses_by_expiry ON login_addresses (expires_at);
