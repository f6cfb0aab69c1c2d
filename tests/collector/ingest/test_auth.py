"""Domain authorization: caching, single-flight, negative TTL and pixel-management outages."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from collector.errors import AuthorizationUnavailable, DomainNotAuthorized
from collector.ingest.auth import DomainAuthorizer, PixelManagementDirectory
from tests.clock import FakeClock
from tests.conftest import MakeApp
from tests.pixel_management import PixelManagement, site_config


def make_authorizer(pixel: PixelManagement, clock: FakeClock | None = None, **overrides: float) -> DomainAuthorizer:
    options = {"ttl_s": 300.0, "negative_ttl_s": 30.0, "stale_max_s": 3600.0, **overrides}
    return DomainAuthorizer(
        PixelManagementDirectory(pixel.url, timeout_s=0.5), ip_hash_secret="s", max_entries=1000,
        clock=clock or FakeClock(), **options,
    )  # fmt: skip


async def test_thousand_concurrent_requests_make_one_lookup(pixel: PixelManagement) -> None:
    """Single-flight: 1,000 concurrent authorizations of an uncached domain cause one pixel-management request."""
    pixel.delay_s = 0.2
    authorizer = make_authorizer(pixel)
    try:
        sites = await asyncio.gather(*(authorizer.authorize("acme.com") for _ in range(1000)))
    finally:
        await authorizer.close()
    assert {s.client_id for s in sites} == {"client_acme_corp"}
    assert pixel.lookups["acme.com"] == 1


async def test_cached_decisions_need_no_lookup(pixel: PixelManagement) -> None:
    """Within the positive TTL a domain is answered from memory."""
    authorizer = make_authorizer(pixel)
    try:
        for _ in range(5):
            await authorizer.authorize("acme.com")
    finally:
        await authorizer.close()
    assert pixel.lookups["acme.com"] == 1
    assert authorizer.stats.hits == 4


async def test_negative_decision_expires_so_new_domains_start_working(pixel: PixelManagement) -> None:
    """A refused domain is refused from cache until the short negative TTL passes, then looked up again."""
    clock = FakeClock()
    authorizer = make_authorizer(pixel, clock, negative_ttl_s=30)
    try:
        for _ in range(3):
            with pytest.raises(DomainNotAuthorized):
                await authorizer.authorize("newcomer.io")
            clock.advance(9)
        assert pixel.lookups["newcomer.io"] == 1
        pixel.domains["newcomer.io"] = site_config("client_newcomer")
        clock.advance(3.5)
        assert (await authorizer.authorize("newcomer.io")).client_id == "client_newcomer"
        assert pixel.lookups["newcomer.io"] == 2
    finally:
        await authorizer.close()


async def test_outage_with_a_cached_decision_serves_it_stale(pixel: PixelManagement) -> None:
    """When pixel-management fails after the TTL, the last known decision is still served."""
    clock = FakeClock()
    authorizer = make_authorizer(pixel, clock, ttl_s=300)
    try:
        assert (await authorizer.authorize("acme.com")).client_id == "client_acme_corp"
        pixel.status = 503
        clock.advance(301)
        assert (await authorizer.authorize("acme.com")).client_id == "client_acme_corp"
        assert authorizer.stats.stale_served == 1
        assert pixel.lookups["acme.com"] == 2
    finally:
        await authorizer.close()


async def test_outage_without_a_cached_decision_is_503_not_403(
    make_app: MakeApp, pixel: PixelManagement, db: asyncpg.Connection
) -> None:
    """Unavailable with nothing cached → 503 authorization_unavailable with Retry-After; nothing stored."""
    running = await make_app()
    pixel.status = 500
    response = await running.post({"eventType": "a", "siteId": "acme.com"})
    assert response.status_code == 503
    assert response.json()["error"] == "authorization_unavailable"
    assert int(response.headers["retry-after"]) > 0
    await running.services.buffer.drain()
    assert await db.fetchval("SELECT count(*) FROM events_log") == 0


async def test_unreachable_pixel_management_is_503(make_app: MakeApp, pixel: PixelManagement) -> None:
    """A pixel-management that does not answer at all (connection refused) also means 503, never 403."""
    await pixel.stop()
    running = await make_app()
    response = await running.post({"eventType": "a", "siteId": "acme.com"})
    assert response.status_code == 503
    assert response.json()["error"] == "authorization_unavailable"


async def test_slow_pixel_management_times_out_as_unavailable(pixel: PixelManagement) -> None:
    """A lookup slower than the timeout is 'unavailable' (503), not a hang."""
    pixel.delay_s = 2.0
    authorizer = make_authorizer(pixel)
    try:
        with pytest.raises(AuthorizationUnavailable):
            await authorizer.authorize("acme.com")
    finally:
        await authorizer.close()
