-- lanyard datastore, PostgreSQL schema version 2. See the SQLite file for the meaning.
ALTER TABLE agents ADD COLUMN new_serial TEXT;

CREATE INDEX events_created_at ON events (created_at_us);
