"""Ingest: a payload to authorized, encoded rows; no HTTP, no SQL."""
