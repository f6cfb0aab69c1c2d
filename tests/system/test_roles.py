"""ROLE=ingest and ROLE=pipeline: the split runs ingest and the pipeline in separate processes on one database."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg

from tests.conftest import MakeApp, wait_for_rows

PIPELINE_MODULES = ("pipeline.scheduler", "pipeline.objects", "pipeline.export", "aioboto3", "botocore")

# The app's lifespan in a fresh interpreter (this test process has imported the pipeline long ago), with one event
# sent through it; prints what it answered and which pipeline modules got imported.
INGEST_PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    import httpx
    from collector.app import create_app
    from collector.settings import Settings

    async def main():
        settings = Settings(
            database_url=sys.argv[1], data_dir=sys.argv[2], role="ingest", flush_interval_ms=20, drain_timeout_s=5,
            database_pool_size=2,
        )
        app = create_app(settings)
        async with app.starlette.router.lifespan_context(app.starlette):
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 51000))
            async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
                posted = await client.post("/collect", json={"eventType": "role", "siteId": "localhost"})
                export = await client.post("/export/run")
        loaded = [m for m in sys.argv[3].split(",") if m in sys.modules]
        print(json.dumps({"posted": posted.status_code, "export": export.status_code, "loaded": loaded}))

    asyncio.run(main())
    """
)


def test_an_ingest_role_process_never_imports_the_pipeline(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """ROLE=ingest stores events, has no pipeline endpoints, and never loads the pipeline's stages (nor boto)."""
    probe = subprocess.run(
        [sys.executable, "-c", INGEST_PROBE, database_url, str(tmp_path / "data"), ",".join(PIPELINE_MODULES)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result == {"posted": 200, "export": 404, "loaded": []}


async def test_a_pipeline_role_serves_no_collect_and_is_ready_with_its_database(running_admin: MakeApp) -> None:
    """ROLE=pipeline answers /collect and its alias with a 404 that says why, and is ready while PostgreSQL is."""
    app = await running_admin(role="pipeline")
    for path in ("/collect", "/e"):
        answer = await app.client.post(path, json={"eventType": "x", "siteId": "localhost"})
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == "not_found" and "ROLE=pipeline" in answer.json()["detail"]
    assert (await app.client.get("/readyz")).json() == {"status": "ready"}
    assert app.services.buffer.depth == 0 and app.services.storage.journal is None  # never started here


async def test_ingest_and_pipeline_roles_split_the_work_on_one_database(
    running_admin: MakeApp, db: asyncpg.Connection
) -> None:
    """Events sent to an ingest-role app are exported by a pipeline-role app beside it; neither does the other's job."""
    ingest = await running_admin(role="ingest")
    pipeline = await running_admin(role="pipeline")
    for n in range(5):
        answer = await ingest.post({"eventType": "split", "siteId": "acme.com", "eventData": {"n": n}})
        assert answer.status_code == 200, answer.text
    await ingest.services.buffer.drain()
    await wait_for_rows(db, 5)
    assert (await ingest.client.post("/export/run")).status_code == 404
    exported = await pipeline.client.post("/export/run")
    assert exported.status_code == 200, exported.text
    assert exported.json()["events_exported"] == 5
    assert 'stage="export"' not in (await ingest.client.get("/metrics")).text  # no pipeline series where none runs
    assert (
        'collector_pipeline_runs_total{result="success",stage="export"} 1.0'
        in (await pipeline.client.get("/metrics")).text
    )
