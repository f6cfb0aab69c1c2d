-- The seed service's table under its own column names, so SQL and dashboards written for it run unchanged
-- (docs/migrating.md). Its queries say FROM events_log, which is our table's name too: the view lives in a schema
-- of its own and is reached by putting that schema first on the search path (`SET search_path = seed, public`,
-- PGOPTIONS='-c search_path=seed,public', or ALTER ROLE <dashboard role> SET search_path = seed, public).
-- The collector's own connections keep the default search path, so they never see it.
--
-- A plain view: it is inlined into each query, so a filter on created_at prunes day partitions like one on
-- received_at. Read-only (its columns are computed); our own names stay beside the seed's.
CREATE SCHEMA IF NOT EXISTS seed;

CREATE VIEW seed.events_log AS
SELECT
    e.id,
    e.event_type,
    e.event_timestamp AS "timestamp",
    e.session_id,
    e.visitor_id,
    e.site_id,
    e.client_id,
    e.url,
    e.path,
    e.referrer,
    e.user_agent,
    host(e.ip) AS ip_address,
    e.event_data,
    -- The event as the client sent it (camelCase), rebuilt from the columns: the batch wrapper is not stored, so
    -- a sub-event's payload carries the fields it inherited from the wrapper.
    jsonb_strip_nulls(
        jsonb_build_object(
            'eventType', e.event_type, 'eventId', e.event_id, 'sessionId', e.session_id,
            'visitorId', e.visitor_id, 'siteId', e.site_id, 'url', e.url, 'path', e.path,
            'referrer', e.referrer, 'timestamp', e.event_timestamp, 'eventData', e.event_data
        ) || coalesce(e.extra, '{}'::jsonb)
    ) AS raw_event_data,
    e.received_at AS created_at,
    -- Ours, which the seed's table had no names for.
    e.event_id,
    e.ip_hash,
    e.extra,
    e.received_at
FROM public.events_log e;

COMMENT ON SCHEMA seed IS 'The seed service''s names (docs/migrating.md); read-only views over public tables';
COMMENT ON VIEW seed.events_log IS 'public.events_log under the seed service''s column names (docs/migrating.md)';
