"""Fixtures of the fault suite: a PostgreSQL of its own that tests stop, start and hang, apart from the session's."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.system.faults import report
from tests.system.faults.pgcontrol import StoppablePostgres

TABLES = ("events_log", "ingest_batches", "client_daily_counts", "dead_letters")


@pytest.fixture(scope="module")
def fault_pg() -> Iterator[StoppablePostgres]:
    """A dedicated embedded PostgreSQL for the module (a short /tmp path: its unix socket lives in its data dir)."""
    with tempfile.TemporaryDirectory(prefix="faults-pg-") as data_dir:
        server = StoppablePostgres(Path(data_dir) / "pg")
        try:
            yield server
        finally:
            server.close()


@pytest.fixture
async def pg(fault_pg: StoppablePostgres) -> StoppablePostgres:
    """The fault suite's PostgreSQL, running (whatever the last test left it as), with the collector's tables empty."""
    await asyncio.to_thread(fault_pg.ensure_running)
    conn = await asyncpg.connect(fault_pg.url)
    try:
        present = [t for t in TABLES if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", t)]
        if present:
            await conn.execute(f"TRUNCATE {', '.join(present)}")
    finally:
        await conn.close()
    return fault_pg


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if report.FIGURES:
        terminalreporter.section("fault injection figures")
        for line in report.table():
            terminalreporter.write_line(line)
