"""schemathesis against the real collector under uvicorn: every operation of /openapi.json, fuzzed and checked.

`make test` runs a short pass (FUZZ_EXAMPLES=5); `make fuzz` a long one (FUZZ_EXAMPLES=300 unless set).
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.harness import FUZZ_EXAMPLES, collector_process, run_schemathesis, wait_until_live

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)

pytestmark = pytest.mark.timeout(120 + FUZZ_EXAMPLES * 10)


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Generated requests to every documented operation get no 5xx and only responses their schema describes."""
    with collector_process(database_url, tmp_path) as (proc, url):
        await wait_until_live(proc, url)
        await run_schemathesis(proc, f"{url}/openapi.json", "--checks", CHECKS)
    log = (tmp_path / "collector.log").read_text()
    assert "Traceback" not in log, log[-4000:]
