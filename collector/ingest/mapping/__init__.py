"""One mapping per front door (Segment, Snowplow, Plausible): a protocol's payload turned into /collect events.

Each mapping turns already-parsed JSON into `Mapped` events of our own shape (eventType, eventId, eventData, the
inherited fields, anything else kept in `extra`), grouped by what one Ingest call shares (the site, the IP and
the User-Agent). Nothing here stores or authorizes: every group goes through Ingest.collect_payload, the same path
as /collect. docs/protocols.md documents every field.
"""
