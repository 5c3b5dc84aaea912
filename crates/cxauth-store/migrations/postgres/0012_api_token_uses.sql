-- cxauth schema, version 12: API tokens' last uses in a narrow table of their own.

-- The minute's write of last uses updated `api_tokens.last_used_at` in place. A token's row is
-- ~150 bytes, so the rows used in a minute were spread over almost every page of the table, and
-- each write logged about the whole table: 112 MB of WAL for 100,000 tokens used out of 1M.
-- Here a use is ~15 bytes, one row per token ever used, in token id order: the same write logs
-- 3.5 to 11.6 MB (docs/decisions.md, "Last uses have a table of their own").
-- A row goes with its token (ON DELETE CASCADE). The old column is copied and left in place,
-- no longer written: dropping it would rewrite the whole table on SQLite, and an instance of
-- the previous version still running during an upgrade keeps working (it shows the last use
-- as of the upgrade).
CREATE TABLE api_token_uses (
    token_id     BIGINT PRIMARY KEY REFERENCES api_tokens (id) ON DELETE CASCADE,
    last_used_at BIGINT NOT NULL
);
INSERT INTO api_token_uses (token_id, last_used_at)
    SELECT id, last_used_at FROM api_tokens WHERE last_used_at IS NOT NULL ORDER BY id;
