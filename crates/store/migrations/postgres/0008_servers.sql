-- The servers sharing this datastore, each as of its last heartbeat. `signs_until_us` is when the
-- last credential it may have handed out expires: once that has passed and the server has stopped
-- beating, nothing it signed is valid any more, and the other servers leave its authorities out
-- of the trust bundle. A server restarted with the same id beats again and puts them back.
CREATE TABLE servers (
    server_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    node_address    TEXT   NOT NULL,
    health_address  TEXT   NOT NULL DEFAULT '',
    version         TEXT   NOT NULL,
    started_at_us   BIGINT NOT NULL,
    last_seen_us    BIGINT NOT NULL,
    ca_expires_at_us BIGINT,
    signs_until_us  BIGINT NOT NULL
);
