"""Collection API: the HTTP ingest service for website tracking events."""

__version__ = "0.1.0"
