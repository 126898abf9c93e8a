-- The change feed is PostgreSQL's (LISTEN/NOTIFY): a SQLite file has one server writing it, which
-- knows its own writes. Nothing to change here; the version exists so both backends count alike.
SELECT 1;
