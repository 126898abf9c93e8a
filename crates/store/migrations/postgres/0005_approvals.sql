-- Task grants waiting for a human: a policy annotated @approval("required") allowed them.
-- `request` is the task request as JSON (what to grant once approved). `state` moves from
-- 'pending' to 'approved' or 'denied' (or 'expired'), and from 'approved' to 'granted' once the
-- task is minted for the caller, exactly once.
CREATE TABLE approvals (
    id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    spiffe_id      TEXT COLLATE "C" NOT NULL,
    request        TEXT   NOT NULL,
    policy_ids     TEXT   NOT NULL,
    state          TEXT   NOT NULL,
    decided_by     TEXT   NOT NULL DEFAULT '',
    reason         TEXT   NOT NULL DEFAULT '',
    task_id        TEXT COLLATE "C",
    created_at_us  BIGINT NOT NULL,
    expires_at_us  BIGINT NOT NULL,
    decided_at_us  BIGINT
);
CREATE INDEX approvals_state ON approvals (state);
