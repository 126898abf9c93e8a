-- lanyard datastore, PostgreSQL schema version 1. Keep in step with migrations/sqlite/.
-- Times are microseconds since the Unix epoch (`*_us`), durations are microseconds. Key columns use
-- COLLATE "C" so that ordering (and so paging) is bytewise, as in SQLite.

-- Named counters. Writers bump a counter inside their transaction; the row lock makes the numbers
-- follow commit order: `entry_revision` (the global revision of registration entries), `event_id`
-- (ids of the events table), `entry_pruned_through` (tombstones at or below it were pruned).
CREATE TABLE counters (
    name  TEXT   NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('entry_revision', 0), ('event_id', 0), ('entry_pruned_through', 0);

CREATE TABLE entries (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    spiffe_id        TEXT COLLATE "C" NOT NULL,
    parent_id        TEXT COLLATE "C" NOT NULL,
    -- JSON array of "type:value" strings in canonical (sorted) order.
    selectors        TEXT    NOT NULL,
    selector_count   BIGINT  NOT NULL,
    -- hex SHA-256 of the canonical selector list: exact-match lookups.
    selectors_key    TEXT    NOT NULL,
    -- hex SHA-256 of (spiffe_id, parent_id, canonical selectors): no two entries share it.
    identity_key     TEXT    NOT NULL UNIQUE,
    x509_svid_ttl_us BIGINT  NOT NULL,
    jwt_svid_ttl_us  BIGINT  NOT NULL,
    dns_names        TEXT    NOT NULL,
    federates_with   TEXT    NOT NULL,
    admin            BOOLEAN NOT NULL,
    downstream       BOOLEAN NOT NULL,
    hint             TEXT    NOT NULL,
    expires_at_us    BIGINT,
    revision         BIGINT  NOT NULL UNIQUE,
    created_at_us    BIGINT  NOT NULL,
    updated_at_us    BIGINT  NOT NULL
);
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);
CREATE INDEX entries_parent_id ON entries (parent_id);
CREATE INDEX entries_selectors_key ON entries (selectors_key);

-- One row per selector of an entry, for the subset/superset/any filters.
CREATE TABLE entry_selectors (
    entry_id TEXT COLLATE "C" NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    kind     TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (entry_id, kind, value)
);
CREATE INDEX entry_selectors_kind_value ON entry_selectors (kind, value);

-- Deleted entries, so that "changes since revision N" can report deletions.
CREATE TABLE entry_tombstones (
    revision BIGINT NOT NULL PRIMARY KEY,
    entry_id TEXT   NOT NULL
);

CREATE TABLE agents (
    spiffe_id        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    attestation_type TEXT    NOT NULL,
    serial           TEXT    NOT NULL,
    expires_at_us    BIGINT  NOT NULL,
    banned           BOOLEAN NOT NULL,
    selectors        TEXT    NOT NULL,
    created_at_us    BIGINT  NOT NULL,
    updated_at_us    BIGINT  NOT NULL
);

-- Join tokens by hex SHA-256 of the token; the token itself is never stored.
CREATE TABLE join_tokens (
    token_hash    TEXT   NOT NULL PRIMARY KEY,
    spiffe_id     TEXT,
    expires_at_us BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    used_at_us    BIGINT
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at_us);

CREATE TABLE bundles (
    trust_domain  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    document      TEXT   NOT NULL,
    sequence      BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);

CREATE TABLE ca_journals (
    server_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    data          BYTEA  NOT NULL,
    version       BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);

-- Append-only; ids come from the `event_id` counter (see above), not from a sequence, because a
-- sequence hands out ids in call order, not commit order, and a reader of "events after id N"
-- would skip an id that commits late.
CREATE TABLE events (
    id            BIGINT NOT NULL PRIMARY KEY,
    kind          TEXT   NOT NULL,
    payload       TEXT   NOT NULL,
    created_at_us BIGINT NOT NULL
);
