"""In-process micro-benchmark of the /collect handler (CollectEndpoint → Ingest.collect → buffer.put), no network.

Measures the per-request CPU cost of the hot path alone: a real Ingest with a real DomainAuthorizer over the domains
file (cached after the first request) and a real WriteBehindBuffer that is never started (put() only queues), so no
database is needed. Prints the best of several rounds of N requests, in microseconds per request.

    .venv/bin/python deploy/bench/micro_collect.py [N] [ROUNDS] [SCENARIO]

The wall-clock figures are noisy on a shared machine; instructions per request are not. Run one scenario under
callgrind at two sizes and divide the difference, e.g. (Ir = "Collected" in the callgrind output):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python deploy/bench/micro_collect.py 2000 1 single
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson

from collector.edge.collect import CollectEndpoint
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.directories import make_directory
from collector.ingest.service import Ingest
from collector.settings import Settings
from collector.storage.accounting import Accounting
from collector.storage.buffer import WriteBehindBuffer

SINGLE = orjson.dumps({"eventType": "pageview", "sessionId": "s1", "siteId": "localhost", "url": "http://localhost/"})
BATCH20 = orjson.dumps(
    {
        "eventType": "batch",
        "sessionId": "s1",
        "siteId": "localhost",
        "events": [{"eventType": "click", "eventData": {"element": f"b{i}"}} for i in range(20)],
    }
)
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), (b"user-agent", b"bench/1.0")]
BROWSER = [*HEADERS, (b"origin", b"http://localhost:3000"), (b"referer", b"http://localhost:3000/page")]


def in_process_ingest(settings: Settings) -> tuple[Ingest, DomainAuthorizer, WriteBehindBuffer]:
    """A real Ingest over the settings' domains (a real, cached DomainAuthorizer) and a WriteBehindBuffer never
    started, so put() only queues and no database is needed (deploy/bench/protocols.py builds its cells on it too)."""
    authorizer = DomainAuthorizer(
        make_directory(settings), ip_hash_secret=settings.hash_secret, ttl_s=3600, negative_ttl_s=30,
        stale_max_s=3600, max_entries=1000,
    )  # fmt: skip
    sink: Any = None  # never started: put() only queues
    pool: Any = None  # never flushed
    buffer = WriteBehindBuffer(
        sink, max_events=10_000_000, max_bytes=1 << 40, flush_max_events=1000, flush_interval_s=1, drain_timeout_s=1
    )
    return Ingest(settings, authorizer, buffer, Accounting(pool, redact=str)), authorizer, buffer


async def run(body: bytes, headers: list[tuple[bytes, bytes]], n: int, rounds: int) -> float:
    settings = Settings(database_url="postgresql://unused", buffer_max_events=10_000_000, buffer_max_bytes=1 << 40)
    ingest, authorizer, buffer = in_process_ingest(settings)
    collect = CollectEndpoint(settings, ingest, authorizer)
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/collect", "query_string": b"", "headers": headers,
        "client": ("203.0.113.7", 5000),
    }  # fmt: skip
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    best = float("inf")
    for _ in range(rounds):
        buffer._queue.clear()  # keep memory flat between rounds
        start = time.perf_counter()
        for _ in range(n):
            await collect(scope, receive, send)
        best = min(best, time.perf_counter() - start)
    assert set(statuses) == {200}, set(statuses)
    return best / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    only = sys.argv[3] if len(sys.argv) > 3 else None
    for name, body, headers in (
        ("single", SINGLE, HEADERS),
        ("single-browser", SINGLE, BROWSER),
        ("batch20-browser", BATCH20, BROWSER),
    ):
        if only is not None and name != only:
            continue
        print(f"{name:28} {asyncio.run(run(body, headers, n, rounds)):7.2f} µs/request (best of {rounds} x {n})")


if __name__ == "__main__":
    main()
