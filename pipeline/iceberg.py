"""The optional Apache Iceberg table: processing's side of it (docs/pipeline.md#iceberg).

With ICEBERG_CATALOG_URI set, processing appends the rows of each raw object's processed client objects to one
Iceberg table (a SQL catalog, files in ICEBERG_WAREHOUSE), partitioned by client and receive day. Exactly once: each
snapshot's summary names its raw object and clients, and a commit first leaves out the clients a snapshot already
names. The commit runs in the pipeline's worker process (pipeline.iceberg_commit, imported there only): pyiceberg
builds Arrow tables, encodes Parquet and writes Avro manifests, CPU work that in this process would hold the GIL
that /collect needs, and its ~100 MB of imports (pyiceberg, SQLAlchemy, pyarrow) stay out of it.

This module imports none of them: the ingest role, and a pipeline without a catalog, never load them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, TypeVar

from collector.logsafe import for_log
from pipeline import offload
from pipeline.iceberg_target import Checkpoint, CommitOutcome, IcebergCommitError, IcebergTarget
from pipeline.render import MAX_ERROR_CHARS, ClientRender

logger = logging.getLogger(__name__)


class Written(Protocol):
    @property
    def client_id(self) -> str: ...


W = TypeVar("W", bound=Written)


class IcebergTable:
    """Appends processed client objects' rows to the Iceberg table, once per (raw object, client)."""

    def __init__(self, target: IcebergTarget, checkpoint: Checkpoint | None = None) -> None:
        self.target = target
        self.checkpoint = checkpoint

    async def commit(self, raw_key: str, fmt: str, objects: Mapping[str, list[bytes]]) -> CommitOutcome:
        """One snapshot with the rows of `objects` (client → its processed objects in `fmt`) not yet in the table."""
        outcome = await offload.run(_commit, self.target, raw_key, fmt, dict(objects), self.checkpoint)
        logger.info(
            "Iceberg table %s: %d rows of %s appended in %.3f s%s",
            self.target.table, outcome.rows, raw_key, outcome.seconds,
            f" ({len(outcome.skipped)} clients already there)" if outcome.skipped else "",
        )  # fmt: skip
        return outcome

    async def add(
        self, raw_key: str, fmt: str, written: list[W], rendered: Mapping[str, ClientRender],
        failed: list[tuple[str, BaseException]],
    ) -> list[W]:  # fmt: skip
        """Commit the written clients' rows; `written` if committed. If the commit fails, each of those clients joins
        `failed` (processing retries it like a failed upload: its objects written again, then this commit, which
        then leaves out whatever did reach the table) and none is left written."""
        objects: dict[str, list[bytes]] = {}
        for item in written:
            render = rendered[item.client_id]
            if isinstance(render, dict):
                objects[item.client_id] = [body for body, _, _ in render.values()]
        try:
            await self.commit(raw_key, fmt, objects)
        except Exception as exc:  # the catalog, the warehouse, or the worker process: all of this commit failed
            error = for_log(str(exc), MAX_ERROR_CHARS)  # SQLAlchemy's texts run to many lines
            logger.warning("Iceberg table %s: commit of %s failed: %s", self.target.table, raw_key, error)
            failed.extend((client_id, exc) for client_id in sorted(objects))
            return []
        return written


def _commit(
    target: IcebergTarget, raw_key: str, fmt: str, objects: dict[str, list[bytes]], checkpoint: Checkpoint | None
) -> CommitOutcome:
    """In the worker process: import pyiceberg there, never here. A failure comes back as IcebergCommitError: some
    of SQLAlchemy's errors cannot be rebuilt from their pickle, which would take the worker pool down with them."""
    from pipeline.iceberg_commit import commit

    try:
        return commit(target, raw_key, fmt, objects, checkpoint)
    except Exception as exc:
        raise IcebergCommitError(f"{type(exc).__name__}: {exc}") from None
