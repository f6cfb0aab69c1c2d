"""Issue 11, item 9: a foreign page cannot forge browser events by hiding its Origin and Referer.

`<img referrerpolicy="no-referrer" src=".../e?siteId=victim.com">` sends neither header, so the collector judged
it as a server. Browsers mark every request they make with Fetch Metadata (Sec-Fetch-Site/Mode/Dest); one that
carries it but no Origin or Referer naming an authorized page is refused as origin_mismatch.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiohttp import web

from tests.conftest import Running, count_rows
from tests.harness import collector_process, wait_until_live
from tests.pages import CHROMIUM, launch_chromium, serve_html
from tests.pixel_management import PixelManagement

pytestmark = pytest.mark.timeout(120)

PIXEL = "/e?eventType=pageview&siteId=acme.com"
IMAGE = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"}


async def rejected(running: Running) -> dict[str, int]:
    counts: dict[str, int] = (await running.client.get("/health")).json()["events"]["rejected"]
    return counts


async def test_a_browser_pixel_without_origin_or_referer_is_refused(running: Running, db: asyncpg.Connection) -> None:
    """A pixel GET (or a POST) with Fetch Metadata and no Origin/Referer is refused origin_mismatch, stores nothing."""
    answer = await running.client.get(PIXEL, headers=IMAGE)
    assert answer.status_code == 200 and answer.headers["x-collector-rejected"] == "origin_mismatch"
    post = await running.post({"eventType": "pageview", "siteId": "acme.com"}, headers={"sec-fetch-site": "same-site"})
    assert (post.status_code, post.json()["error"]) == (403, "origin_mismatch")
    await running.services.buffer.drain()
    assert await count_rows(db) == 0
    assert (await rejected(running))["origin_mismatch"] == 2


async def test_servers_and_pages_of_the_site_are_judged_as_before(running: Running, db: asyncpg.Connection) -> None:
    """Without Fetch Metadata (a server), with a Referer of the site, or typed into the address bar
    (Sec-Fetch-Site: none), the pixel is accepted as it was."""
    server = await running.client.get(PIXEL)
    from_the_site = await running.client.get(PIXEL, headers={**IMAGE, "referer": "https://shop.acme.com/page"})
    typed = await running.client.get(PIXEL, headers={**IMAGE, "sec-fetch-site": "none", "sec-fetch-dest": "document"})
    for answer in (server, from_the_site, typed):
        assert answer.headers.get("x-collector-status") == "accepted", answer.headers
    foreign_referer = await running.client.get(PIXEL, headers={**IMAGE, "referer": "https://evil.org/"})
    assert foreign_referer.headers["x-collector-rejected"] == "origin_mismatch"
    await running.services.buffer.drain()
    assert await count_rows(db) == 3


async def serve_pages(collector_url: str) -> tuple[web.AppRunner, int]:
    """The attacker's page (an <img> pixel for the victim's site, hiding its referrer) and the site's own page."""
    pixel = f"{collector_url}/e?eventType=forged&siteId=shop.test"
    pages = {
        "/forge.html": f'<title>Evil</title><img id="p" referrerpolicy="no-referrer" src="{pixel}">',
        "/own.html": f'<title>Shop</title><img id="p" src="{collector_url}/e?eventType=own&siteId=shop.test">',
    }
    return await serve_html(pages)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
async def test_chromium_no_referrer_pixel_on_a_foreign_page_stores_nothing(
    database_url: str, db: asyncpg.Connection, shop: PixelManagement, tmp_path: Path
) -> None:
    """In Chromium, evil.test's <img referrerpolicy=no-referrer> pixel for shop.test is refused origin_mismatch,
    while shop.test's own pixel is stored."""
    from playwright.async_api import async_playwright

    with collector_process(database_url, tmp_path, PIXEL_MANAGEMENT_URL=shop.url) as (proc, collector_url):
        await wait_until_live(proc, collector_url)
        runner, port = await serve_pages(collector_url)
        try:
            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright)
                for url in (f"http://evil.test:{port}/forge.html", f"http://shop.test:{port}/own.html"):
                    page = await browser.new_page()
                    await page.goto(url)
                    await page.wait_for_function("document.getElementById('p').complete")
                await browser.close()
            async with httpx.AsyncClient(base_url=collector_url) as client, asyncio.timeout(30):
                while True:
                    events = (await client.get("/health")).json()["events"]
                    if events["received"] >= 2 and await count_rows(db) >= 1:
                        break
                    await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()
        assert events["rejected"] == {"origin_mismatch": 1}
        rows = await db.fetch("SELECT event_type, client_id FROM events_log")
        assert [(r["event_type"], r["client_id"]) for r in rows] == [("own", "client_browser_shop")]
