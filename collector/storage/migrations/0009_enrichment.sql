-- Enrichment (docs/enrichment.md): the consent state ingest recorded, the bot verdict and the user agent's and the
-- address's details that storage's thread adds before COPY. All nullable: rows stored before this migration, and
-- rows whose client's privacy level leaves a detail out, have NULL there. Adding nullable columns without a default
-- is a catalog change only: no partition is rewritten. Partitions created later inherit them.
ALTER TABLE events_log
    ADD COLUMN consent         text,
    ADD COLUMN bot             boolean,
    ADD COLUMN bot_reason      text,
    ADD COLUMN browser_family  text,
    ADD COLUMN browser_version text,
    ADD COLUMN os_family       text,
    ADD COLUMN os_version      text,
    ADD COLUMN device_type     text,
    ADD COLUMN country         text,
    ADD COLUMN region          text,
    ADD COLUMN city            text;

-- Cookieless visitors (docs/enrichment.md#cookieless-visitors): one random salt per UTC day, shared by every worker;
-- a day's salt is deleted once the day is over, so yesterday's visitor ids can no longer be recomputed or linked.
CREATE TABLE visitor_salts (
    day  date  PRIMARY KEY,
    salt bytea NOT NULL
);
