-- lanyard datastore, PostgreSQL schema version 3. See the SQLite file for the meaning.
DROP INDEX IF EXISTS events_created_at;
DROP TABLE events;
DELETE FROM counters WHERE name = 'event_id';

INSERT INTO counters (name, value) VALUES ('audit_seq', 0);

CREATE TABLE audit_log (
    seq     BIGINT NOT NULL PRIMARY KEY,
    time_us BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    actor   TEXT   NOT NULL,
    subject TEXT   NOT NULL,
    details TEXT   NOT NULL
);
CREATE INDEX audit_log_kind ON audit_log (kind, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_time ON audit_log (time_us);

CREATE TABLE audit_checkpoints (
    signer        TEXT COLLATE "C" NOT NULL,
    size          BIGINT NOT NULL,
    note          TEXT   NOT NULL,
    leaf_hashes   BYTEA  NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (signer, size)
);

CREATE TABLE tasks (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    spiffe_id     TEXT COLLATE "C" NOT NULL,
    entry_id      TEXT   NOT NULL,
    agent_id      TEXT   NOT NULL,
    audience      TEXT   NOT NULL,
    operations    TEXT   NOT NULL,
    purpose       TEXT   NOT NULL,
    on_behalf_of  TEXT   NOT NULL,
    policy_ids    TEXT   NOT NULL,
    token_id      TEXT   NOT NULL UNIQUE,
    issued_at_us  BIGINT NOT NULL,
    expires_at_us BIGINT NOT NULL,
    ended_at_us   BIGINT
);
CREATE INDEX tasks_spiffe_id ON tasks (spiffe_id);
