-- cxauth schema, version 8: the credential change log (issue 14).

-- One row per change that ends or alters a credential (a session ended, a user disabled or
-- deleted, a password changed, an API token deleted, the account tree changed), written in the
-- transaction of the change. Every instance keeps credential state in memory and reads the rows
-- after the last one it applied to forget what changed elsewhere; old rows are pruned.
-- kind: 'session' (key: session id), 'user' (key: user id), 'accounts' (key: empty).
CREATE TABLE credential_changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    at   INTEGER NOT NULL
);
CREATE INDEX credential_changes_by_at ON credential_changes (at);
