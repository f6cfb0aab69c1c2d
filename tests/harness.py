"""The real `python -m collector` as a subprocess, and a load driver that keeps a ledger of what it acknowledged.

Shared by tests/system/test_server.py (graceful stops) and tests/system/faults/ (crashes, database outages, hangs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg
import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def collector_process(
    database_url: str | None,
    tmp_path: Path,
    *,
    port: int | None = None,
    new_session: bool = False,
    **env: str,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start `python -m collector` on a loopback port (no DATABASE_URL: embedded); kill it if left running.

    Its output is appended to tmp_path/collector.log, so that successive runs on the same DATA_DIR share one log.
    `new_session` starts it in a session and process group of its own, as a terminal's `make run` job is: a signal
    to that group (os.killpg) reaches every worker too, as closing the terminal or Ctrl+C does.
    """
    port = port or free_port()
    log = (tmp_path / "collector.log").open("ab")
    inherited = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env = {
        **inherited,
        **({"DATABASE_URL": database_url} if database_url else {}),
        "PORT": str(port),
        "DATABASE_POOL_SIZE": "2",
        "DATABASE_MAX_OVERFLOW": "2",
        "DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector"],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if new_session:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # workers too, if a test left any
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


async def wait_until_live(proc: subprocess.Popen[bytes], url: str) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(30):
        while True:
            assert proc.poll() is None, "the collector exited during startup"
            try:
                if (await client.get(f"{url}/livez")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


class Ledger:
    """The load driver's record of every event id the collector acknowledged with a 2xx."""

    def __init__(self) -> None:
        self.acked: set[uuid.UUID] = set()
        self.refused = 0
        self.pids: set[int] = set()
        self.answers: Counter[str] = Counter()  # "200", "503 buffer_full", "transport", ...

    async def drive(
        self, url: str, stop: asyncio.Event, *, connections: int = 8, batch: int = 5, request_timeout_s: float = 10
    ) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=request_timeout_s) as client:
            await asyncio.gather(*(self._loop(client, stop, batch) for _ in range(connections)))

    async def _loop(self, client: httpx.AsyncClient, stop: asyncio.Event, batch: int) -> None:
        while not stop.is_set():
            ids = [uuid.uuid4() for _ in range(batch)]
            payload = {
                "eventType": "batch",
                "siteId": "localhost",
                "sessionId": "load",
                "events": [{"eventType": "load", "eventId": str(i)} for i in ids],
            }
            try:
                response = await client.post("/collect", json=payload)
            except httpx.TransportError:
                self.refused += 1
                self.answers["transport"] += 1
                await asyncio.sleep(0.01)
                continue
            if 200 <= response.status_code < 300:
                self.acked.update(ids)
                self.answers[str(response.status_code)] += 1
            else:
                assert response.status_code == 503, response.text
                self.refused += 1
                self.answers[f"503 {_error_code(response)}"] += 1


@asynccontextmanager
async def loading(ledger: Ledger, url: str, **options: Any) -> AsyncIterator[None]:
    """Run the ledger-keeping load driver for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(ledger.drive(url, stop, **options))
    try:
        yield
    finally:
        stop.set()
        await task


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error"))
    except ValueError:
        return "?"


async def stored_ids(database_url: str) -> set[uuid.UUID]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r["event_id"] for r in await conn.fetch("SELECT event_id FROM events_log WHERE event_type = 'load'")}
    finally:
        await conn.close()


FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))


async def run_schemathesis(proc: subprocess.Popen[bytes], *arguments: str) -> None:
    """`schemathesis run ARGUMENTS` (FUZZ_EXAMPLES examples, seed FUZZ_SEED) against a running collector: it must
    find nothing, and the collector must still be up. The report is printed on failure or on a long run."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency: make install-dev"
    run = await asyncio.create_subprocess_exec(
        cli, "run", *arguments, "--max-examples", str(FUZZ_EXAMPLES), "--seed", os.environ.get("FUZZ_SEED", "0"),
        "--no-color", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await run.communicate()
    report = output.decode(errors="replace")
    if FUZZ_EXAMPLES > 5 or run.returncode:
        print(report)
    assert run.returncode == 0, report[-4000:]
    assert proc.poll() is None, "the collector died under the fuzzer"
