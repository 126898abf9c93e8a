-- lanyard datastore, SQLite schema version 3.
-- The event log becomes the audit log (one log, not two): `events` and its counter go, and its
-- rows with them (they have no actor or subject to carry over).
DROP INDEX IF EXISTS events_created_at;
DROP TABLE events;
DELETE FROM counters WHERE name = 'event_id';

-- `audit_seq`: the number of audit records ever appended. An append bumps it inside its
-- transaction and takes the old value as its `seq`, so seqs are 0, 1, 2, … in commit order
-- without gaps; `audit_size` reads it (a row deleted behind the store's back does not change it).
INSERT INTO counters (name, value) VALUES ('audit_seq', 0);

-- Append-only; leaf `seq` of the Merkle log. The columns are kept verbatim: the verifier
-- decides whether a record is valid. `details` is canonical JSON text.
CREATE TABLE audit_log (
    seq     INTEGER NOT NULL PRIMARY KEY,
    time_us INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    details TEXT    NOT NULL
) STRICT;
-- Listings filter by one of these and read in seq order.
CREATE INDEX audit_log_kind ON audit_log (kind, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_time ON audit_log (time_us);

-- Signed checkpoints of the audit log, per signer (server key). `leaf_hashes`: 32 bytes per
-- record the checkpoint adds to the signer's previous one.
CREATE TABLE audit_checkpoints (
    signer        TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    note          TEXT    NOT NULL,
    leaf_hashes   BLOB    NOT NULL,
    created_at_us INTEGER NOT NULL,
    PRIMARY KEY (signer, size)
) STRICT;

-- Granted tasks. `operations` and `policy_ids` are JSON arrays of strings.
CREATE TABLE tasks (
    id            TEXT    NOT NULL PRIMARY KEY,
    spiffe_id     TEXT    NOT NULL,
    entry_id      TEXT    NOT NULL,
    agent_id      TEXT    NOT NULL,
    audience      TEXT    NOT NULL,
    operations    TEXT    NOT NULL,
    purpose       TEXT    NOT NULL,
    on_behalf_of  TEXT    NOT NULL,
    policy_ids    TEXT    NOT NULL,
    token_id      TEXT    NOT NULL UNIQUE,
    issued_at_us  INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    ended_at_us   INTEGER
) STRICT;
CREATE INDEX tasks_spiffe_id ON tasks (spiffe_id);
