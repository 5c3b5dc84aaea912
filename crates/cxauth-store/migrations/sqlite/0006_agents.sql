-- cxauth schema, version 6: agents (issue 16), and the RingEX account a main account is linked to.

-- The RingEX (RingCentral) account id of a main account, as RingCX shows it in `rcAccountId`;
-- NULL for an account not linked to RingEX. Only main accounts carry it.
ALTER TABLE accounts ADD COLUMN rc_account_id TEXT;
CREATE UNIQUE INDEX accounts_by_rc_account_id ON accounts (rc_account_id);

-- Contact-centre agents. An agent lives in one sub-account and is linked to a user through the
-- user's RingEX user id (rc_user_id), as in RingCX: a RingEX user who is an agent has one agent
-- record per sub-account. No password: agents log in through their user.
CREATE TABLE agents (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id          BIGINT NOT NULL REFERENCES accounts (id),
    username            TEXT NOT NULL UNIQUE,
    first_name          TEXT NOT NULL,
    last_name           TEXT NOT NULL,
    email               TEXT,
    -- 'AGENT' or 'SUPERVISOR'
    agent_type          TEXT NOT NULL,
    rc_user_id          BIGINT,
    agent_group_id      BIGINT,
    allow_login_control BOOLEAN NOT NULL,
    allow_login_updates BOOLEAN NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX agents_by_account ON agents (account_id);
CREATE INDEX agents_by_rc_user ON agents (rc_user_id);
