"""Issue 11, item 5: sockets that send nothing cannot exhaust a worker's file descriptors or starve its service."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.harness import collector_process, wait_until_live
from tests.security.conftest import figure, long_only, scale

pytestmark = pytest.mark.timeout(120)

EVENT = json.dumps({"eventType": "pageview", "siteId": "localhost"}).encode()


@contextmanager
def inherited_file_limit(soft: int) -> Iterator[None]:
    """Children started inside the block inherit a soft file limit of `soft` (the usual 1,024, or less)."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


def open_idle_sockets(url: str, count: int) -> list[socket.socket]:
    """`count` connections to the collector that never send a byte."""
    parts = urlsplit(url)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:  # this test process holds them all
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))
    sockets = []
    for _ in range(count):
        s = socket.create_connection((parts.hostname, parts.port))
        sockets.append(s)
    return sockets


def server_sockets(pid: int) -> int:
    """Sockets the collector process holds open (client connections, its listener, its database pool)."""
    folder = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in folder.iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count


async def timed_answers(url: str) -> tuple[int, int, float]:
    """A /collect and a /readyz on new connections: their statuses and the slower one's seconds."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        start = time.perf_counter()
        collect, readyz = await asyncio.gather(
            client.post("/collect", content=EVENT, headers={"content-type": "application/json"}),
            client.get("/readyz"),
        )
        return collect.status_code, readyz.status_code, time.perf_counter() - start


async def closed_by_server_within(url: str, data: bytes, seconds: float) -> float | None:
    """Send `data` on a new connection, read until the server closes it; seconds taken, None if still open."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    start = time.perf_counter()
    try:
        if data:
            writer.write(data)
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
        return time.perf_counter() - start
    except TimeoutError:
        return None
    finally:
        writer.close()


async def hold_idle_sockets_and_ask(database_url: str, tmp_path: Path, idle: int, file_limit: int) -> float:
    with ExitStack() as stack:
        with inherited_file_limit(file_limit):
            proc, url = stack.enter_context(collector_process(database_url, tmp_path))
        await wait_until_live(proc, url)
        sockets = open_idle_sockets(url, idle)
        stack.callback(lambda: [s.close() for s in sockets])
        await asyncio.sleep(1.0)  # the worker accepts them all (or runs out of descriptors trying)
        collect, readyz, seconds = await asyncio.wait_for(timed_answers(url), 30)
        assert (collect, readyz) == (200, 200)
        async with httpx.AsyncClient(base_url=url) as client:
            held = server_sockets(proc.pid)
            edge = (await client.get("/health")).json()["edge"]["connections_refused"]
        assert edge["over_connection_limit"] == 0  # the idle ones are held, not refused
        assert held >= idle
        figure(f"sockets the collector holds ({idle} idle, {file_limit}-descriptor start limit)", held)
        figure("slower of /collect and /readyz beside them (ms)", round(seconds * 1000, 1))
        return seconds


async def test_idle_sockets_past_the_inherited_file_limit_do_not_stop_service(
    database_url: str, tmp_path: Path
) -> None:
    """400 silent sockets against a collector started with a 256-descriptor soft limit: /collect and /readyz are
    still answered (the limit is raised to the hard one at start)."""
    seconds = await hold_idle_sockets_and_ask(database_url, tmp_path, 400, 256)
    assert seconds < 5


@long_only
async def test_two_thousand_idle_sockets_leave_collect_and_readyz_answered_within_a_second(
    database_url: str, tmp_path: Path
) -> None:
    """2,000 silent sockets against a collector started with the usual 1,024 soft limit: a new /collect and
    /readyz are answered within 1 s."""
    seconds = await hold_idle_sockets_and_ask(database_url, tmp_path, scale(400, 2000), 1024)
    assert seconds < 1


async def test_silent_and_idle_keepalive_connections_are_closed(database_url: str, tmp_path: Path) -> None:
    """A connection that sends nothing is closed after FIRST_BYTE_TIMEOUT_S, and one idle after an answer after
    KEEPALIVE_TIMEOUT_S; both are counted."""
    with collector_process(database_url, tmp_path, FIRST_BYTE_TIMEOUT_S="1", KEEPALIVE_TIMEOUT_S="1") as (proc, url):
        await wait_until_live(proc, url)
        silent = await closed_by_server_within(url, b"", 4)
        assert silent is not None, "a silent connection was never closed"
        answered = await closed_by_server_within(url, b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n", 4)
        assert answered is not None, "an idle keep-alive connection was not closed after KEEPALIVE_TIMEOUT_S"
        async with httpx.AsyncClient(base_url=url) as client:
            edge = (await client.get("/health")).json()["edge"]["connections_refused"]
        assert edge["idle_timeouts"] >= 2
        figure("silent connection closed after (s)", round(silent, 2))
        figure("idle keep-alive connection closed after (s)", round(answered, 2))


async def test_at_the_connection_cap_new_connections_are_refused_at_once(database_url: str, tmp_path: Path) -> None:
    """With MAX_CONNECTIONS held by silent sockets, a new connection gets an immediate 503 instead of waiting; once
    the silent ones are gone, service is back."""
    cap = scale(50, 50)
    with collector_process(database_url, tmp_path, MAX_CONNECTIONS=str(cap)) as (proc, url):
        await wait_until_live(proc, url)
        sockets = open_idle_sockets(url, cap)
        try:
            await asyncio.sleep(0.5)
            parts = urlsplit(url)
            start = time.perf_counter()
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            async with asyncio.timeout(5):
                answer = await reader.read()  # the refusal comes before the client even sends its request
            seconds = time.perf_counter() - start
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503 ") and b"too_many_connections" in answer
            figure("refusal at the connection cap (ms)", round(seconds * 1000, 1))
        finally:
            for s in sockets:
                s.close()
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/readyz")).status_code == 200
            edge = (await client.get("/health")).json()["edge"]["connections_refused"]
        assert edge["over_connection_limit"] == 1
