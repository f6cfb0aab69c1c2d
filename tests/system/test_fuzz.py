"""schemathesis against the real collector under uvicorn: every operation of /openapi.json, fuzzed and checked.

`make test` runs a short pass (FUZZ_EXAMPLES=5); `make fuzz` a long one (FUZZ_EXAMPLES=300 unless set).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.harness import collector_process, wait_until_live

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)

pytestmark = pytest.mark.timeout(120 + EXAMPLES * 10)


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Generated requests to every documented operation get no 5xx and only responses their schema describes."""
    with collector_process(database_url, tmp_path) as (proc, url):
        await wait_until_live(proc, url)
        cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert cli, "schemathesis is a dev dependency: make install-dev"
        run = await asyncio.create_subprocess_exec(
            cli, "run", f"{url}/openapi.json", "--checks", CHECKS, "--max-examples", str(EXAMPLES),
            "--seed", os.environ.get("FUZZ_SEED", "0"), "--no-color",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await run.communicate()
        report = output.decode(errors="replace")
        if EXAMPLES > 5 or run.returncode:
            print(report)
        assert run.returncode == 0, report[-4000:]
        assert proc.poll() is None, "the collector died under the fuzzer"
    log = (tmp_path / "collector.log").read_text()
    assert "Traceback" not in log, log[-4000:]
