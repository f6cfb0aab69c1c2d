-- Issue 11: duplicate removal per client, and one client's failing objects kept apart from everyone else's.
--
-- processed_event_ids was keyed on event_id alone, so an event id sent under another client's site (or the
-- all-zero UUID) claimed the id first and removed that client's event from its processed output. Claims are now
-- per (client_id, event_id). Existing claims get the client of the row they came from (the raw object's id range
-- names it); a claim whose row is gone (its partition dropped) keeps '' and can no longer match a resend.
ALTER TABLE processed_event_ids ADD COLUMN client_id text;
UPDATE processed_event_ids p SET client_id = e.client_id
FROM raw_objects r, events_log e
WHERE r.key = p.raw_key AND e.event_id = p.event_id AND e.id BETWEEN r.range_start AND r.last_id;
UPDATE processed_event_ids SET client_id = '' WHERE client_id IS NULL;
ALTER TABLE processed_event_ids ALTER COLUMN client_id SET NOT NULL;
ALTER TABLE processed_event_ids DROP CONSTRAINT processed_event_ids_pkey;
ALTER TABLE processed_event_ids ADD PRIMARY KEY (client_id, event_id);
CREATE INDEX processed_event_ids_raw ON processed_event_ids (raw_key);

-- A client whose object of a raw object could not be written (its configuration refused, its bucket unreachable)
-- waits here with a growing delay, while the raw object is marked processed for every other client. A row goes
-- away when the object is written; its events stay claimed by the raw object, so a resend cannot take them.
-- raw_objects.processed_at now means: every client's object is written or waits here.
CREATE TABLE processing_retries (
    raw_key         text        NOT NULL REFERENCES raw_objects (key),
    client_id       text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 1,
    reason          text        NOT NULL,  -- config, store or error
    last_error      text        NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL,
    PRIMARY KEY (raw_key, client_id)
);
CREATE INDEX processing_retries_due ON processing_retries (next_attempt_at);

-- The same flaw in the readers' view: one client's event id hid another client's event. Per client now too.
CREATE OR REPLACE VIEW events_unique AS
SELECT DISTINCT ON (client_id, event_id) *
FROM events_log
ORDER BY client_id, event_id, id;
