-- cxauth schema, version 10: find a session's live refresh token without walking its history.

-- Each rotation marks the session's live token rotated (`... WHERE session_id = ? AND rotated_at
-- IS NULL`). Through refresh_tokens_by_session that visits every token the session ever had, so
-- a refresh cost more the longer the session lived (a session rotated 250 times: ~65k of ~770k
-- instructions per refresh, measured with callgrind; see BENCHMARKS.md). A session has at most
-- one live token, so this partial index holds one entry per live session.
CREATE INDEX refresh_tokens_live_by_session ON refresh_tokens (session_id) WHERE rotated_at IS NULL;
