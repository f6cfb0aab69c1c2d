"""The Iceberg table's side that runs in the pipeline's worker process: pyiceberg, its SQL catalog, and one append
per raw object whose snapshot names it, so that a second commit of the same rows is recognised and skipped.

Imported only by the worker process (pipeline.offload runs `commit` there, pickled by name), and only when
ICEBERG_CATALOG_URI is set: the process answering /collect never loads pyiceberg, SQLAlchemy or pyarrow.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform

from pipeline.arrow import SCHEMA, record_batch
from pipeline.formats import iter_events
from pipeline.iceberg_target import (
    CATALOG_NAME,
    CLIENTS_PROPERTY,
    DAY_SOURCE,
    RAW_KEY_PROPERTY,
    Checkpoint,
    CommitOutcome,
    IcebergTarget,
)
from pipeline.parquet import row_of

# One catalog (a SQLAlchemy engine and its connection pool: one idle connection to the catalog's database between
# commits) per target for the worker process's life.
_catalogs: dict[IcebergTarget, Catalog] = {}


def commit(
    target: IcebergTarget, raw_key: str, fmt: str, objects: Mapping[str, list[bytes]], checkpoint: Checkpoint | None
) -> CommitOutcome:
    """Append the processed objects' rows of the clients no snapshot of `raw_key` holds yet, in one snapshot whose
    summary names `raw_key` and those clients; nothing if every client is already in the table.

    Optimistic: the catalog accepts the commit only on top of the metadata this checked, so a snapshot committed
    meanwhile (by whatever) fails this one (CommitFailedException) instead of slipping past the check.
    """
    started = time.perf_counter()
    table = _table(target)
    done = committed_clients(table, raw_key)
    todo = {client_id: bodies for client_id, bodies in objects.items() if client_id not in done}
    if not todo:
        return CommitOutcome(rows=0, skipped=sorted(objects), seconds=time.perf_counter() - started)
    rows = _rows(fmt, todo)
    transaction = table.transaction()
    # Writes the data files, manifests and manifest list to the warehouse; the table does not name them yet.
    transaction.append(rows, snapshot_properties={RAW_KEY_PROPERTY: raw_key, CLIENTS_PROPERTY: ",".join(sorted(todo))})
    if checkpoint is not None:
        checkpoint("written")
    transaction.commit_transaction()  # the catalog's row now names the new metadata: the one step that publishes
    if checkpoint is not None:
        checkpoint("committed")
    return CommitOutcome(rows=rows.num_rows, skipped=sorted(done & set(objects)), seconds=time.perf_counter() - started)


def committed_clients(table: Table, raw_key: str) -> set[str]:
    """The clients whose rows of `raw_key` some snapshot of the table already appended."""
    clients: set[str] = set()
    for snapshot in table.snapshots():
        properties = snapshot.summary.additional_properties if snapshot.summary is not None else {}
        if properties.get(RAW_KEY_PROPERTY) == raw_key:
            clients.update(properties.get(CLIENTS_PROPERTY, "").split(","))
    return clients


def _table(target: IcebergTarget) -> Table:
    """The table as the catalog has it now (created if missing; new columns of SCHEMA added to it)."""
    catalog = _catalogs.get(target)
    if catalog is None:
        # pool_pre_ping: the pooled connection is checked before use, so a PostgreSQL restart since the last commit
        # costs a reconnect, not a failed commit and a client's backoff.
        catalog = _catalogs[target] = SqlCatalog(
            CATALOG_NAME, uri=target.catalog_uri, warehouse=target.warehouse, pool_pre_ping="true", **dict(target.io)
        )
    try:
        table = catalog.load_table(target.table)
    except NoSuchTableError:
        table = _create(catalog, target.table)
    missing = [name for name in SCHEMA.names if name not in {field.name for field in table.schema().fields}]
    if missing:  # a column added to pipeline.parquet.COLUMNS: Iceberg adds it, older files read it as null
        with table.update_schema() as update:
            update.union_by_name(SCHEMA)
    return table


def _create(catalog: Catalog, identifier: str) -> Table:
    """The table with SCHEMA's columns, partitioned by client and by the UTC day each event was received."""
    catalog.create_namespace_if_not_exists(identifier.split(".")[0])
    creation = catalog.create_table_transaction(identifier, schema=SCHEMA)
    with creation.update_spec() as spec:
        spec.add_identity("client_id")
        spec.add_field(DAY_SOURCE, DayTransform(), f"{DAY_SOURCE}_day")
    return creation.commit_transaction()


def _rows(fmt: str, objects: Mapping[str, list[bytes]]) -> pa.Table:
    """The processed objects' rows as one Arrow table of SCHEMA (a parquet object is read as it is)."""
    batches: list[pa.RecordBatch] = []
    for bodies in objects.values():
        for body in bodies:
            if fmt == "parquet":
                batches.extend(pq.read_table(pa.BufferReader(body), schema=SCHEMA).to_batches())
            else:
                batches.append(record_batch([row_of(event) for event in iter_events(fmt, body)]))
    return pa.Table.from_batches(batches, schema=SCHEMA)
