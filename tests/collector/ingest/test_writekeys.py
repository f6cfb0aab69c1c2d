"""Write keys resolved through pixel-management's write_key endpoint: single-flight, caching, wrong keys, outages."""

from __future__ import annotations

import asyncio

import pytest

from collector.errors import AuthorizationUnavailable, InvalidWriteKey
from collector.ingest.auth import PixelManagementDirectory
from collector.ingest.writekeys import WriteKeys
from tests.clock import FakeClock
from tests.pixel_management import PixelManagement, site_config

KEY = "wkAcmeServer0001"


def make_keys(pixel: PixelManagement, clock: FakeClock) -> tuple[WriteKeys, PixelManagementDirectory]:
    directory = PixelManagementDirectory(pixel.url, timeout_s=0.5)
    keys = WriteKeys(
        directory, ip_hash_secret="s", ttl_s=300.0, negative_ttl_s=30.0, stale_max_s=3600.0, max_entries=1000,
        clock=clock,
    )  # fmt: skip
    return keys, directory


async def test_thousand_concurrent_resolves_of_a_new_key_make_one_lookup(pixel: PixelManagement) -> None:
    """Single-flight, as for domains: 1,000 concurrent requests naming an uncached key cause one lookup."""
    pixel.domains["acme.com"] = site_config("client_acme_corp")
    pixel.write_keys[KEY] = "acme.com"
    pixel.delay_s = 0.2
    keys, directory = make_keys(pixel, FakeClock())
    try:
        found = await asyncio.gather(*(keys.resolve(KEY) for _ in range(1000)))
    finally:
        await directory.close()
    assert {(k.client_id, k.domain) for k in found} == {("client_acme_corp", "acme.com")}
    assert pixel.lookups[f"write_key:{KEY}"] == 1


async def test_a_known_key_is_cached_and_served_stale_through_an_outage(pixel: PixelManagement) -> None:
    """Within the TTL a key needs no lookup; past it, while pixel-management fails, the last answer still holds."""
    pixel.domains["acme.com"] = site_config("client_acme_corp")
    pixel.write_keys[KEY] = "acme.com"
    clock = FakeClock()
    keys, directory = make_keys(pixel, clock)
    try:
        await keys.resolve(KEY)
        await keys.resolve(KEY)
        assert pixel.lookups[f"write_key:{KEY}"] == 1
        pixel.status = 503
        clock.advance(301)
        assert (await keys.resolve(KEY)).client_id == "client_acme_corp"
        clock.advance(3600)
        with pytest.raises(AuthorizationUnavailable):
            await keys.resolve(KEY)
    finally:
        await directory.close()


async def test_a_wrong_or_malformed_key_is_refused_and_only_a_wellformed_one_is_looked_up(
    pixel: PixelManagement,
) -> None:
    """An unknown key answers 401 (and is remembered for the negative TTL); a malformed one is never sent."""
    keys, directory = make_keys(pixel, FakeClock())
    try:
        for _ in range(2):
            with pytest.raises(InvalidWriteKey):
                await keys.resolve("wkUnknownKey0001")
        with pytest.raises(InvalidWriteKey):
            await keys.resolve("bad key/../x")
    finally:
        await directory.close()
    assert pixel.lookups["write_key:wkUnknownKey0001"] == 1
    assert not any("bad" in name for name in pixel.lookups)
