"""The S3 pipeline: raw export of new rows and per-client processing (built in a later issue)."""
