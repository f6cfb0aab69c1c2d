"""The Iceberg table's plain data, shared by processing (pipeline.iceberg) and the worker process's commit
(pipeline.iceberg_commit): where the table lives, what a commit reports, and the names its snapshots carry.

No pyiceberg here: this is what crosses to the worker process, pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from collector.settings import Settings

# The SQL catalog's name, stored in its rows (iceberg_tables.catalog_name): Spark's catalog name and Trino's
# iceberg.jdbc-catalog.catalog-name must be this to see the table.
CATALOG_NAME = "collector"
# Snapshot summary properties: the raw object whose rows a snapshot appended, and of which clients (comma-separated:
# client ids never hold a comma).
RAW_KEY_PROPERTY = "collector.raw-key"
CLIENTS_PROPERTY = "collector.clients"
# Partitioned by client_id (identity) and by day(received_at): the server's clock, as the Hive-style processed
# objects are, so the table's partitions are the objects' folders; a client's clock can be off by years.
DAY_SOURCE = "received_at"


@dataclass(frozen=True, slots=True)
class IcebergTarget:
    """Where the table lives, as plain data the worker process receives (and keys its catalog cache by)."""

    catalog_uri: str = field(repr=False)  # a SQLAlchemy URI, with the catalog database's password
    warehouse: str  # s3://bucket/prefix or file:///folder
    table: str  # namespace.table
    io: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # pyiceberg FileIO properties (S3 keys...)

    @classmethod
    def from_settings(cls, settings: Settings) -> IcebergTarget | None:
        """The target Settings name (an s3:// warehouse reached as the processed bucket is), None without a catalog."""
        if settings.iceberg_catalog_uri is None or settings.iceberg_warehouse is None:
            return None
        warehouse = settings.iceberg_warehouse
        io: dict[str, str | None] = {}
        if warehouse.startswith("s3://"):
            bucket = settings.processed
            io = {
                "s3.endpoint": bucket.endpoint_url,
                "s3.access-key-id": bucket.access_key,
                "s3.secret-access-key": bucket.secret_key,
                "s3.region": bucket.region,
            }
        elif not warehouse.startswith("file://"):
            warehouse = Path(warehouse).as_uri()
        properties = tuple(sorted((name, value) for name, value in io.items() if value is not None))
        return cls(settings.iceberg_catalog_uri, warehouse, settings.iceberg_table, properties)


class IcebergCommitError(Exception):
    """A commit to the Iceberg table failed (nothing was published; files it wrote are orphans)."""


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    rows: int  # rows appended (0 when every client was already in the table)
    skipped: list[str]  # clients whose rows of this raw object a snapshot already held
    seconds: float


class Checkpoint(Protocol):
    """Called in the worker process at "written" (data files and manifests in the warehouse, not committed) and
    "committed": a test raises there to stand for a crash. Must be picklable (a module-level function)."""

    def __call__(self, step: str) -> None: ...
