-- cxauth schema, version 11: find a user's live sessions without walking the ended ones.

-- Every login with the session cap on (the default) ends the user's live sessions beyond the cap,
-- newest kept (`... WHERE user_id = ? AND revoked_at IS NULL ... ORDER BY created_at DESC, id
-- DESC`). Through sessions_by_user that visits every session the user has, ended ones included,
-- and ended sessions stay until the next purge of expired rows (every ten minutes): a user who
-- logs in often made each of its logins cost more (BENCHMARKS.md, "Dec 4, twelfth round"). This
-- partial index holds only live sessions, in the order the cap keeps them.
--
-- IF NOT EXISTS: building it takes a lock that holds writes to sessions (logins, refreshes)
-- for as long as it runs, and migrations run in a transaction, where PostgreSQL cannot build
-- an index CONCURRENTLY. On a large database an operator can build it beforehand with
-- `CREATE INDEX CONCURRENTLY sessions_live_by_user ...` (the same definition); this migration
-- then finds it and does nothing.
CREATE INDEX IF NOT EXISTS sessions_live_by_user ON sessions (user_id, created_at, id)
    WHERE revoked_at IS NULL;
