-- Task grants waiting for a human: a policy annotated @approval("required") allowed them.
-- `request` is the task request as JSON (what to grant once approved). `state` moves from
-- 'pending' to 'approved' or 'denied' (or 'expired'), and from 'approved' to 'granted' once the
-- task is minted for the caller, exactly once.
CREATE TABLE approvals (
    id             TEXT    NOT NULL PRIMARY KEY,
    spiffe_id      TEXT    NOT NULL,
    request        TEXT    NOT NULL,
    policy_ids     TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    decided_by     TEXT    NOT NULL DEFAULT '',
    reason         TEXT    NOT NULL DEFAULT '',
    task_id        TEXT,
    created_at_us  INTEGER NOT NULL,
    expires_at_us  INTEGER NOT NULL,
    decided_at_us  INTEGER
) STRICT;
CREATE INDEX approvals_state ON approvals (state);
