"""Collection API: the HTTP ingest service for website tracking events."""

from importlib import metadata

try:
    # pyproject.toml is the one place the version is written; everything else (GET /, /openapi.json,
    # collector_build_info) reads it from here.
    __version__ = metadata.version("collection-api")
except metadata.PackageNotFoundError:  # a checkout run without being installed
    __version__ = "0+unknown"
