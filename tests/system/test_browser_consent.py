"""The tracker's consent mode in a real browser: with data-consent="required" it writes nothing to the page's storage
and sends no identifiers until collector.consent({analytics: true}); the rows record each event's consent state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.harness import collector_process, wait_until_live
from tests.pages import CHROMIUM, launch_chromium, serve_html
from tests.pixel_management import PixelManagement

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs the Debian packages chromium and chromium-driver (/usr/bin/chromium); `make test` installs"
        " them when run as root, else: apt-get install chromium chromium-driver",
    ),
]
STORAGE = "[localStorage.length, sessionStorage.length]"


async def test_tracker_waits_for_consent_before_storing_or_sending_identifiers(
    database_url: str, db: asyncpg.Connection, shop: PixelManagement, tmp_path: Path
) -> None:
    """Before consent: empty localStorage and sessionStorage, events stored as denied without ids or address; after
    consent({analytics: true}): the visitor id the page stored, and the address, are kept."""
    from playwright.async_api import async_playwright

    with collector_process(database_url, tmp_path, PIXEL_MANAGEMENT_URL=shop.url) as (proc, collector_url):
        await wait_until_live(proc, collector_url)
        snippet = f'<script src="{collector_url}/s.js" data-consent="required" async></script>'
        runner, port = await serve_html({
            "/index.html": f"<title>Shop</title>{snippet}",
            "/next.html": "<title>Next</title><p>no tracker here</p>",
        })  # fmt: skip
        try:
            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright)
                page = await browser.new_page()
                await page.goto(f"http://shop.test:{port}/index.html")
                await page.wait_for_function("window.collector !== undefined")
                await page.evaluate("collector.track('before', {step: 1})")
                assert await page.evaluate(STORAGE) == [0, 0]
                await page.evaluate("collector.consent({analytics: true})")
                visitor = await page.evaluate("localStorage.getItem('_ca_vid')")
                await page.evaluate("collector.track('after', {step: 2})")
                await page.goto(f"http://shop.test:{port}/next.html")  # pagehide: the rest goes by sendBeacon
                await browser.close()
            async with asyncio.timeout(30):
                while await db.fetchval("SELECT count(*) FROM events_log") < 3:
                    await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()
    rows = {r["event_type"]: r for r in await db.fetch("SELECT * FROM events_log")}
    assert set(rows) == {"pageview", "before", "after"}
    for name in ("pageview", "before"):
        row = rows[name]
        assert (row["consent"], row["visitor_id"], row["session_id"], row["ip"]) == ("denied", None, None, None)
    after = rows["after"]
    assert visitor and (after["consent"], after["visitor_id"]) == ("granted", visitor)
    assert after["session_id"] and str(after["ip"]) == "127.0.0.1"
    # Playwright's Chromium reports navigator.webdriver, which the tracker passes on: an automated browser is a bot.
    assert after["bot"] is True and after["bot_reason"] in ("automation", "headless")
