"""One mapping per front door (Segment, Snowplow, Plausible): a protocol's payload turned into our events.

Each mapping reads already-parsed JSON two ways with the same helpers: `encode_*` encodes a message's events_log
COPY row directly (rows.py: only what /collect would certainly take), `map_*` builds the /collect event dict
(eventType, eventId, eventData, the inherited fields, anything else kept in `extra`) for what the encoder leaves to
/collect's own path. Either way the events are grouped by what one Ingest call shares (the site, the IP and the
User-Agent). Nothing here stores or authorizes: every group goes through Ingest (collect_rows or collect_payload),
with /collect's steps. docs/protocols.md documents every field and the cost.
"""
