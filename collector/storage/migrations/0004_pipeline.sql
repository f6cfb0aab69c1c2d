-- The S3 pipeline's state. Every row of events_log with id <= export_state.watermark is in exactly one raw
-- object; raw_objects is the manifest that proves it (the ranges tile 1..watermark, never overlapping).
--
-- The exporter's safe bound relies on two facts about writers of events_log (see pipeline/export.py):
-- every writing transaction has its transaction id before it takes its first row id (CopyWriter claims its
-- batch in ingest_batches first), and the id sequence hands out one value at a time (CACHE 1, the default:
-- a cached block would let a later transaction insert ids below a bound already exported).
CREATE TABLE export_state (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    watermark  bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO export_state DEFAULT VALUES;

CREATE TABLE raw_objects (
    key            text        PRIMARY KEY,
    range_start    bigint      NOT NULL,  -- the previous object's last_id + 1: ids in a gap belong to no row
    first_id       bigint      NOT NULL,
    last_id        bigint      NOT NULL,
    row_count      integer     NOT NULL,
    format         text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    exported_at    timestamptz,           -- NULL: the range is claimed, the upload not yet confirmed
    checksum       text,                  -- sha256 of the uploaded bytes
    bytes          bigint,
    processed_at   timestamptz,           -- set once every client's processed object is written
    policy_version text,
    CHECK (range_start <= first_id AND first_id <= last_id),
    CONSTRAINT raw_objects_no_overlap EXCLUDE USING gist (int8range(range_start, last_id, '[]') WITH &&)
);
CREATE INDEX raw_objects_unexported ON raw_objects (range_start) WHERE exported_at IS NULL;
CREATE INDEX raw_objects_unprocessed ON raw_objects (range_start) WHERE exported_at IS NOT NULL AND processed_at IS NULL;

CREATE TABLE processed_objects (
    key            text        NOT NULL,
    store          text        NOT NULL,  -- s3://bucket or file://dir: a client may have a bucket of its own
    raw_key        text        NOT NULL REFERENCES raw_objects (key),
    client_id      text        NOT NULL,
    row_count      integer     NOT NULL,
    checksum       text        NOT NULL,
    policy_version text        NOT NULL,
    written_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store, key)
);
CREATE INDEX processed_objects_raw ON processed_objects (raw_key);

-- Which raw object an event_id was first processed from: a resend or replay in a later raw object is left out.
CREATE TABLE processed_event_ids (
    event_id     uuid        PRIMARY KEY,
    raw_key      text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processed_event_ids_age ON processed_event_ids (processed_at);

-- The last run of each stage, whichever worker or instance ran it.
CREATE TABLE pipeline_runs (
    stage        text        PRIMARY KEY,
    last_run_at  timestamptz,
    last_success_at timestamptz,
    last_result  text,
    last_error   text,
    last_objects integer,
    last_rows    bigint
);
