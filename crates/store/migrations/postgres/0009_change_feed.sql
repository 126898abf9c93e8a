-- The change feed: writes other servers must act on send a notice on the channel
-- `lanyard_changes`, delivered when the writing transaction commits. The payload is the table's
-- name; a listener reads the changes themselves from the store (entries by revision, the audit log
-- by seq, the bundles), so a notice carries no data and a missed one is made up for by catching up.
-- PostgreSQL delivers identical notices of one transaction once, so a batch write is one notice.
CREATE OR REPLACE FUNCTION lanyard_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lanyard_changes', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

-- Entries and their deletions: what `entry_changes_since` reads.
CREATE TRIGGER entries_notify AFTER INSERT OR UPDATE OR DELETE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION lanyard_notify_change();
CREATE TRIGGER entry_tombstones_notify AFTER INSERT ON entry_tombstones
    FOR EACH STATEMENT EXECUTE FUNCTION lanyard_notify_change();

-- Own and federated trust bundles.
CREATE TRIGGER bundles_notify AFTER INSERT OR UPDATE OR DELETE ON bundles
    FOR EACH STATEMENT EXECUTE FUNCTION lanyard_notify_change();

-- The audit records other servers act on: agents evicted, banned or attested again (their open
-- streams end) and tasks ended or revoked (their tokens are pushed to every agent). The list is
-- `lanyard_store::NOTIFIED_AUDIT_KINDS`; a test checks that the two agree.
CREATE TRIGGER audit_log_notify AFTER INSERT ON audit_log
    FOR EACH ROW
    WHEN (NEW.kind IN ('agent.evicted', 'agent.banned', 'agent.attested', 'task.ended', 'task.revoked'))
    EXECUTE FUNCTION lanyard_notify_change();
