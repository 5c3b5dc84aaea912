-- cxauth schema, version 9: API token metadata (a name, an expiry, the last use).

-- All three are optional, so tokens minted before this version (and every token minted through
-- the RingCX POST) have no name, never expire and show as never used.
-- name: what the owner calls it (at most 100 characters, checked by the service).
-- expires_at: epoch ms after which the token is refused like a deleted one (NULL: never).
-- last_used_at: epoch ms of a recent use, written in batches at most about once a minute per
-- token (the last minute of uses can be lost on a crash).
ALTER TABLE api_tokens ADD COLUMN name TEXT;
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
