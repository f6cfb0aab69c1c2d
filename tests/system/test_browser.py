"""End to end in a real browser: headless Chromium loads the tracker from the real collector and its events land in
PostgreSQL, while a copy of the snippet on another origin stores nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiohttp import web

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


async def serve_pages(collector_url: str) -> tuple[web.AppRunner, int]:
    """A second loopback server for the client site's pages, which paste the one-line snippet."""
    snippet = f'<script src="{collector_url}/s.js" async></script>'
    pages = {
        "/index.html": f"<title>Shop</title>{snippet}<button id='buy'>Buy</button>",
        "/next.html": "<title>Next</title><p>another page, without the tracker</p>",
        # The shop's snippet, copied (data-site and all) onto a page of another origin.
        "/copied.html": f'<title>Copy</title><script src="{collector_url}/s.js" data-site="shop.test"></script>'
        "<button id='buy'>Buy</button>",
    }
    return await serve_html(pages)


async def rejected(url: str, reason: str) -> int:
    async with httpx.AsyncClient(base_url=url) as client:
        return int((await client.get("/health")).json()["events"]["rejected"].get(reason, 0))


async def test_tracker_in_chromium_stores_pageview_click_and_custom_event(
    database_url: str, db: asyncpg.Connection, shop: PixelManagement, tmp_path: Path
) -> None:
    """A page on shop.test sends a pageview, a click and a custom event (the last by beacon as it unloads); all are
    stored for the shop's client, and the same snippet copied onto evil.test gets nothing stored."""
    from playwright.async_api import async_playwright

    with collector_process(database_url, tmp_path, PIXEL_MANAGEMENT_URL=shop.url) as (proc, collector_url):
        await wait_until_live(proc, collector_url)
        runner, port = await serve_pages(collector_url)
        try:
            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright)
                page = await browser.new_page()
                await page.goto(f"http://shop.test:{port}/index.html")
                await page.wait_for_function("window.collector !== undefined")
                await page.click("#buy")
                await page.evaluate("collector.track('signup', {plan: 'pro'})")
                await page.goto(f"http://shop.test:{port}/next.html")  # pagehide: the queue goes by sendBeacon

                copied = await browser.new_page()
                await copied.goto(f"http://evil.test:{port}/copied.html")
                await copied.wait_for_function("window.collector !== undefined")
                await copied.click("#buy")
                await copied.evaluate("collector.track('signup', {plan: 'stolen'})")
                await copied.goto(f"http://evil.test:{port}/next.html")
                await browser.close()

            async with asyncio.timeout(30):
                while await db.fetchval("SELECT count(*) FROM events_log") < 3:
                    await asyncio.sleep(0.1)
                while await rejected(collector_url, "origin_mismatch") < 3:
                    await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()
        rows = await db.fetch("SELECT * FROM events_log ORDER BY event_timestamp")
    assert [r["event_type"] for r in rows] == ["pageview", "click", "signup"]
    assert {r["client_id"] for r in rows} == {"client_browser_shop"}
    assert {r["site_id"] for r in rows} == {"shop.test"}
    assert all(r["url"] == f"http://shop.test:{port}/index.html" for r in rows)
    assert rows[1]["event_data"]["id"] == "buy" and rows[2]["event_data"] == {"plan": "pro"}
    assert rows[0]["visitor_id"] and len({(r["session_id"], r["visitor_id"]) for r in rows}) == 1
    assert rows[0]["user_agent"].startswith("Mozilla/5.0")
    assert not await db.fetchval("SELECT count(*) FROM events_log WHERE url LIKE '%evil.test%'")
