"""The S3 pipeline: export of new rows to raw objects, per-client processing under each client's privacy rules, and
retention. It depends on the collector's core (settings, ingest, storage), never on its HTTP edge."""
