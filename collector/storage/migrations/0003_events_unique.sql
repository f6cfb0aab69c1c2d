-- Client retries may resend an event with the same eventId (a beacon whose answer was lost): ingest stores
-- what it is sent, and readers downstream take each event_id once, the first stored. Batch retries and journal
-- replays never get here twice (ingest_batches); this is only for the client's own resends.
CREATE VIEW events_unique AS
SELECT DISTINCT ON (event_id) *
FROM events_log
ORDER BY event_id, id;
