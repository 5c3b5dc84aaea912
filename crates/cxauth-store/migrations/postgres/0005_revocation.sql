-- cxauth schema, version 5: revocation that evicts (issue 11).

-- RingEX emulator JWT credentials get a numeric id, so `cxauth admin ringex jwt list|revoke`
-- can name one without showing anything derived from the secret. Rebuilt as on SQLite, so the
-- two schemas stay alike (nothing references the table).
CREATE TABLE ringex_jwts_v5 (
    id         BIGSERIAL PRIMARY KEY,
    digest     BYTEA NOT NULL UNIQUE,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL
);
INSERT INTO ringex_jwts_v5 (digest, user_id, created_at)
    SELECT digest, user_id, created_at FROM ringex_jwts ORDER BY created_at;
DROP TABLE ringex_jwts;
ALTER TABLE ringex_jwts_v5 RENAME TO ringex_jwts;
CREATE INDEX ringex_jwts_by_user ON ringex_jwts (user_id);

-- Ending every credential of one user (password change, disable, revoke-tokens) finds them by
-- user; API tokens and sessions already have such an index.
CREATE INDEX legacy_tokens_by_user ON legacy_tokens (user_id);
CREATE INDEX ringex_tokens_by_user ON ringex_tokens (user_id);

-- Public keys of retired signing keys (the private half is destroyed at retirement). They never
-- make a token valid; they only let an expired token they signed be told apart from a forged
-- one, so it gets `Jwt is expired` (the one answer the SDKs refresh on). Forgotten once no
-- refresh token of that time can still work.
CREATE TABLE retired_signing_keys (
    kid        TEXT PRIMARY KEY,
    public_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT NOT NULL
);
