"""Issue 11, item 1: memory is bounded in bytes; no structure keyed by client input grows without a bound."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from collector.edge.cors import RememberedOrigins
from collector.ingest import events
from collector.ingest.auth import DEFAULT_DOMAINS_FILE, DomainAuthorizer, PixelManagementDirectory
from collector.ingest.events import RequestContext
from collector.ingest.origins import MAX_ORIGIN_BYTES
from collector.storage import copyformat
from tests.harness import collector_process, wait_until_live
from tests.pixel_management import PixelManagement
from tests.security.conftest import figure, long_only, scale


async def test_flood_of_unknown_domains_does_not_evict_authorized_ones(pixel: PixelManagement) -> None:
    """After 20x the cache size of unknown domains, an authorized one is still served stale during an outage."""
    now = [0.0]
    authorizer = DomainAuthorizer(
        PixelManagementDirectory(pixel.url, timeout_s=2.0), ip_hash_secret="s", ttl_s=60.0, negative_ttl_s=30.0,
        stale_max_s=3600.0, max_entries=100, clock=lambda: now[0],
    )  # fmt: skip
    try:
        assert (await authorizer.authorize("acme.com")).client_id == "client_acme_corp"
        for start in range(0, 2000, 200):
            await asyncio.gather(
                *(authorizer.authorize(f"junk{n}.example") for n in range(start, start + 200)), return_exceptions=True
            )
        now[0] = 120.0  # past the positive TTL: the next call looks up, and the directory is down
        pixel.status = 503
        assert (await authorizer.authorize("acme.com")).client_id == "client_acme_corp"
        assert authorizer.stats.stale_served == 1
    finally:
        await authorizer.close()


def test_user_agent_is_cut_before_it_is_cached_or_stored() -> None:
    """A 32 KiB User-Agent is cut to the bound before it keys the request-fields cache or reaches a row."""
    ctx = RequestContext.build("acme.com", "client", "Mozilla/" + "x" * 32_000, None, None)
    assert len(ctx.tail) < events.MAX_USER_AGENT_CHARS + 200
    assert b"Mozilla/xxx" in ctx.tail


def test_text_cache_takes_only_short_values() -> None:
    """Paths and ids longer than the cached bound are encoded without entering the text cache."""
    before = copyformat.cached_text.cache_info().currsize
    for n in range(20):
        assert events._text({"path": f"/{n}" + "p" * 4000}, "path").endswith(b"p" * 10)
    assert copyformat.cached_text.cache_info().currsize == before


def test_remembered_origins_keep_only_origin_sized_values() -> None:
    """An accepted request's Origin longer than any origin is not remembered."""
    remembered = RememberedOrigins()
    remembered.add(b"https://acme.com/" + b"x" * 30_000)
    remembered.add(b"https://acme.com")
    assert b"https://acme.com" in remembered and len(remembered._seen) == 1
    assert MAX_ORIGIN_BYTES < 1024


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _junk_flood(url: str, n: int) -> dict[int, int]:
    """`n` requests, half ~1 MB with a unique junk siteId and Origin, half stored for the real site; all with
    unique User-Agents, paths and ids."""
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            junk = uuid.uuid4().hex
            headers = {"content-type": "application/json", "user-agent": f"UA/{junk}" + "u" * 20_000}
            if i % 2:  # a junk site: refused before it is looked up
                headers["origin"] = f"https://{junk}.example" + "o" * 8_000
                site = f"[::1%{junk}" + "s" * 600_000 + "]"
                data = {"pad": "d" * 400_000}
            else:  # the real site, with unique ids, path, agent and Referer: stored
                headers["referer"] = f"http://localhost/{junk}" + "r" * 8_000
                site = "localhost"
                data = {"n": i}
            body = orjson.dumps({
                "eventType": "pageview", "siteId": site, "path": f"/{junk}" + "p" * 4000, "sessionId": junk * 7,
                "visitorId": junk * 7, "eventData": data,
            })  # fmt: skip
            async with sem:
                response = await client.post(f"{url}/collect", content=body, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return statuses


async def _rss_growth(database_url: str, tmp_path: Path, n: int) -> tuple[float, dict[int, int]]:
    with collector_process(database_url, tmp_path, AUTHORIZED_DOMAINS_FILE=str(DEFAULT_DOMAINS_FILE)) as (proc, url):
        await wait_until_live(proc, url)
        async with httpx.AsyncClient() as client:  # warm the request path once before the baseline
            await client.post(f"{url}/collect", json={"eventType": "warm", "siteId": "localhost"})
        await asyncio.sleep(0.5)
        idle = _rss_kb(proc.pid)
        statuses = await _junk_flood(url, n)
        await asyncio.sleep(0.5)
        return (_rss_kb(proc.pid) - idle) / 1024, statuses


async def test_junk_megabyte_requests_do_not_pin_worker_memory(database_url: str, tmp_path: Path) -> None:
    """300 requests with unique junk siteIds (~1 MB), Origins, User-Agents and paths grow RSS by well under 100 MB."""
    growth, statuses = await _rss_growth(database_url, tmp_path, 300)
    figure("RSS growth after 300 junk requests (MB)", f"{growth:.1f}")
    assert statuses == {422: 150, 200: 150}, statuses
    assert growth < 100, f"RSS grew {growth:.0f} MB"


@long_only
@pytest.mark.timeout(600)
async def test_two_thousand_junk_requests_grow_rss_at_most_50_mb(database_url: str, tmp_path: Path) -> None:
    """The issue's measure: 2,000 ~1 MB requests with unique junk keys grow one worker's RSS by ≤ 50 MB."""
    growth, statuses = await _rss_growth(database_url, tmp_path, scale(300, 2000))
    figure("RSS growth after 2,000 junk 1 MB requests (MB)", f"{growth:.1f}")
    assert statuses == {422: scale(150, 1000), 200: scale(150, 1000)}, statuses
    assert growth <= 50, f"RSS grew {growth:.0f} MB"
