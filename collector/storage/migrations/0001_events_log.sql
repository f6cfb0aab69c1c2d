-- One row per event, range-partitioned by day on received_at (the server's clock, so a client's
-- wrong clock cannot scatter rows across partitions). Partitions are created ahead of time by
-- the collector; the DEFAULT partition catches anything that arrives before its day exists.
CREATE SEQUENCE events_log_id_seq AS bigint;

CREATE TABLE events_log (
    id              bigint      NOT NULL DEFAULT nextval('events_log_id_seq'),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    session_id      text,
    visitor_id      text,
    site_id         text        NOT NULL,
    client_id       text        NOT NULL,
    event_timestamp timestamptz NOT NULL,
    url             text,
    path            text,
    referrer        text,
    user_agent      text,
    ip              inet,
    ip_hash         text,
    event_data      jsonb,
    extra           jsonb,
    received_at     timestamptz NOT NULL,
    -- The inserting transaction: the raw exporter compares it with the oldest running transaction
    -- so that a row committed after a higher-numbered one is never skipped.
    xact_id         xid8        NOT NULL DEFAULT pg_current_xact_id()
) PARTITION BY RANGE (received_at);

ALTER SEQUENCE events_log_id_seq OWNED BY events_log.id;

CREATE TABLE events_log_default PARTITION OF events_log DEFAULT;

-- Only what the queries here need: newest-first listing and per-client listing (every index
-- slows ingest).
CREATE INDEX events_log_id_idx ON events_log (id);
CREATE INDEX events_log_client_id_idx ON events_log (client_id, id);
