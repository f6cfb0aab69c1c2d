-- One row per committed flush, written in the same transaction as its COPY: a batch that is retried after
-- its commit went through, or replayed from the journal after a crash, finds its id here and is skipped.
CREATE TABLE ingest_batches (
    batch_id     bytea       PRIMARY KEY,
    row_count    integer     NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_batches_committed_at_idx ON ingest_batches (committed_at);

-- Per client and UTC day, what operators bill from: kept by the flusher (stored, in the COPY's transaction)
-- and by the request path (accepted and rejected by reason, flushed every few seconds), never a scan of
-- events_log.
CREATE TABLE client_daily_counts (
    day       date   NOT NULL,
    client_id text   NOT NULL,
    metric    text   NOT NULL,  -- 'stored', 'accepted' or 'rejected:<reason>'
    count     bigint NOT NULL,
    PRIMARY KEY (day, client_id, metric)
);

-- A capped sample of rejected events, so a site owner can see why their events bounce.
CREATE TABLE dead_letters (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    reason      text        NOT NULL,
    client_id   text,
    domain      text,
    detail      text        NOT NULL,
    payload     text        NOT NULL
);
