-- Issue 14: processing that keeps going. A raw object whose processing fails as a whole (unreadable, its store
-- unreachable) now waits with a growing delay instead of being tried again on every run; after PROCESS_MAX_ATTEMPTS
-- failed attempts it, or a client's object of it, is quarantined: never tried again until an operator releases it
-- (docs/pipeline.md), shown in /process/status and collector_pipeline_quarantined_objects.
ALTER TABLE raw_objects
    ADD COLUMN process_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN process_next_at  timestamptz,
    ADD COLUMN process_error    text,
    ADD COLUMN quarantined_at   timestamptz;
ALTER TABLE processing_retries ADD COLUMN quarantined_at timestamptz;
