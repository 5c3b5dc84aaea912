-- cxauth schema, version 3: the audit trail, and an index for purging expired refresh tokens.

-- Security events (logins, throttling, refresh reuse, session ends, API tokens, user changes,
-- keys), never a secret. Kept for the configured retention, then purged in batches.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- epoch ms, from the service's clock
    at         BIGINT NOT NULL,
    -- e.g. login, session.end, api_token.create
    event      TEXT NOT NULL,
    -- e.g. success, failure, throttled, reuse
    outcome    TEXT NOT NULL,
    user_id    BIGINT,
    -- the user's name, or the name a failed login tried
    username   TEXT,
    -- the client address; NULL for the local admin command
    addr       TEXT,
    request_id TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events (at);
CREATE INDEX audit_events_by_username ON audit_events (username, id);

-- The purge deletes expired refresh tokens in batches by expiry.
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);
