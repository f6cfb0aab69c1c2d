"""The vendors' browser SDKs from the npm registry, unchanged, in headless Chromium: a page on shop.test loads
@segment/analytics-next, @snowplow/browser-tracker and plausible-tracker pointed at the real collector (another
loopback origin); their page views and custom events, and the event sent as the page is left, are stored once each.

The SDKs are bundled once by `make browser-sdks` (npm ci and esbuild in tests/system/browser_sdks/); without the
bundle, or without Chromium, this test skips and says why.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web

from tests.harness import collector_process, wait_until_live
from tests.pages import CHROMIUM, launch_chromium, serve_html
from tests.pixel_management import PixelManagement

BUNDLE = Path(__file__).with_name("browser_sdks") / "dist" / "sdks.js"
KEY = "wkShopBrowser001"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.skipif(not BUNDLE.exists(), reason="needs the SDK bundle: make browser-sdks (npm is required)"),
]

PAGE = """<!doctype html><title>Shop</title><script src="/sdks.js"></script><script>
const collector = "%(collector)s";
const analytics = SDKS.AnalyticsBrowser.load({writeKey: "%(key)s", cdnSettings: {integrations: {"Segment.io": {
  apiKey: "%(key)s", apiHost: collector.replace("http://", "") + "/v1", protocol: "http"}}}});
analytics.page();
analytics.track("Signed Up", {plan: "pro"});
SDKS.snowplow.newTracker("sp", collector, {appId: "shop.test", eventMethod: "post", bufferSize: 1,
  stateStorageStrategy: "none", plugins: []});
SDKS.snowplow.trackPageView();
SDKS.snowplow.trackStructEvent({category: "shop", action: "add", label: "sku-1"});
const plausible = SDKS.Plausible({domain: "shop.test", apiHost: collector, trackLocalhost: true});
plausible.trackPageview();
plausible.trackEvent("signup", {props: {plan: "pro"}});
window.leave = () => { analytics.track("Left", {}); location.href = "/next.html"; };
</script><p>shop</p>"""


async def serve(collector: str) -> tuple[web.AppRunner, int]:
    """The shop's pages and the SDK bundle on a loopback port of their own (another origin than the collector's)."""
    pages = {"/index.html": PAGE % {"collector": collector, "key": KEY}, "/next.html": "<title>Next</title><p>next</p>"}
    return await serve_html(pages, {"/sdks.js": BUNDLE})


async def refused(url: str) -> int:
    """Events refused because the page sending them is not on their site (origin_mismatch)."""
    async with httpx.AsyncClient(base_url=url) as client:
        rejected = (await client.get("/health")).json()["events"]["rejected"]
    return int(rejected.get("origin_mismatch", 0))


async def stored(db: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch("SELECT event_type, site_id, client_id, event_id FROM events_log")]


async def test_segment_snowplow_and_plausible_browser_sdks_store_each_event_once(
    database_url: str, db: asyncpg.Connection, shop: PixelManagement, tmp_path: Path
) -> None:
    """Page views and custom events of the three SDKs, and a track sent as the page is left, stored once each for
    the shop's client; the same page copied onto evil.test gets nothing stored."""
    from playwright.async_api import async_playwright

    shop.write_keys[KEY] = "shop.test"
    with collector_process(database_url, tmp_path, PIXEL_MANAGEMENT_URL=shop.url) as (proc, collector_url):
        await wait_until_live(proc, collector_url)
        runner, port = await serve(collector_url)
        try:
            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright)
                page = await browser.new_page()
                await page.goto(f"http://shop.test:{port}/index.html")
                async with asyncio.timeout(30):
                    while len(await stored(db)) < 6:
                        await asyncio.sleep(0.1)
                await page.evaluate("leave()")
                await page.wait_for_url("**/next.html")
                async with asyncio.timeout(30):
                    while len(await stored(db)) < 7:
                        await asyncio.sleep(0.1)
                # The same page copied onto another origin: Segment's and Snowplow's requests are stopped by the
                # refused preflight (they send JSON), Plausible's by the Origin rule (counted); none is stored.
                copied = await browser.new_page()
                await copied.goto(f"http://evil.test:{port}/index.html")
                async with asyncio.timeout(30):
                    while await refused(collector_url) < 2:  # Plausible's two (text/plain: no preflight)
                        await asyncio.sleep(0.1)
                await browser.close()
        finally:
            await runner.cleanup()
    rows = await stored(db)
    types = sorted(r["event_type"] for r in rows)
    assert types == sorted(["pageview", "Signed Up", "pageview", "structured", "pageview", "signup", "Left"]), rows
    assert {(r["site_id"], r["client_id"]) for r in rows} == {("shop.test", "client_browser_shop")}
    assert len({r["event_id"] for r in rows}) == len(rows)
