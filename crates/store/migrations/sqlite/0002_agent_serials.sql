-- lanyard datastore, SQLite schema version 2.
-- `new_serial`: the serial of an agent SVID issued by RenewAgent that the agent has not presented
-- yet. Until it does, the server accepts the current serial or this one; the first call with the
-- new one makes it current and retires the old (so a copy of the old SVID is useless from then).
ALTER TABLE agents ADD COLUMN new_serial TEXT;

-- Events are pruned by age.
CREATE INDEX events_created_at ON events (created_at_us);
