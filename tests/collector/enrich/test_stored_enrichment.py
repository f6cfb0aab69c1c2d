"""Enrichment seen from outside: /collect's rows in events_log carry it, bot policies apply, counts tell them apart."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import asyncpg

from collector.storage import copyformat
from collector.storage.batch import Batch
from collector.storage.journal import Journal
from tests.collector.enrich.geodb import write_city_database
from tests.collector.storage.test_durability import records
from tests.conftest import MakeApp, wait_for_rows
from tests.pixel_management import PixelManagement, site_config

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
COLUMNS = "event_type, bot, bot_reason, browser_family, browser_version, os_family, device_type, country, region, city"


async def test_stored_rows_carry_the_bot_verdict_and_the_user_agents_details(
    make_app: MakeApp, db: asyncpg.Connection
) -> None:
    """A browser's event and a crawler's are both stored, each with its verdict, browser, system and device."""
    running = await make_app()
    await running.post({"eventType": "person", "siteId": "acme.com"}, headers={"user-agent": CHROME})
    await running.post({"eventType": "crawler", "siteId": "acme.com"}, headers={"user-agent": BOT})
    await running.services.buffer.drain()
    rows = {r["event_type"]: dict(r) for r in await db.fetch(f"SELECT {COLUMNS} FROM events_log")}
    assert rows["person"] == {
        "event_type": "person", "bot": False, "bot_reason": None, "browser_family": "Chrome", "browser_version": "131",
        "os_family": "Windows", "device_type": "desktop", "country": None, "region": None, "city": None,
    }  # fmt: skip
    assert (rows["crawler"]["bot"], rows["crawler"]["bot_reason"]) == (True, "crawler")


async def test_a_client_that_drops_bots_stores_none_and_counts_them_by_reason(
    running_admin: MakeApp, pixel: PixelManagement, db: asyncpg.Connection
) -> None:
    """Under `features.bots = drop` a bot's events are acknowledged, not stored, and counted; people's are stored."""
    pixel.domains["strict.com"] = site_config("client_strict", features={"bots": "drop"})
    running = await running_admin()
    bot = await running.post(
        {"eventType": "batch", "siteId": "strict.com", "events": [{"eventType": "a"}, {"eventType": "b"}]},
        headers={"user-agent": BOT},
    )
    assert bot.status_code == 200  # the client's own filter, not a failure to keep (docs/enrichment.md)
    person = await running.post({"eventType": "p", "siteId": "strict.com"}, headers={"user-agent": CHROME})
    assert person.status_code == 200
    await running.services.buffer.drain()
    assert [r["event_type"] for r in await db.fetch("SELECT event_type FROM events_log")] == ["p"]
    await running.services.accounting.flush()
    counts = {
        r["metric"]: r["count"]
        for r in await db.fetch("SELECT metric, count FROM client_daily_counts WHERE client_id = 'client_strict'")
    }
    assert counts == {"accepted": 3, "stored": 1, "dropped:bot:crawler": 2}
    body = (await running.client.get("/events/count", params={"client_id": "client_strict"})).json()
    assert (body["total_events"], body["humans"], body["bots"]) == (1, 1, 0)
    assert body["days"][0]["bots_dropped"] == {"crawler": 2}
    assert running.services.storage.stats.stored == 1
    health = (await running.client.get("/health")).json()
    assert health["events"]["dropped"]["bot"] == 2 and health["enrichment"]["bots"]["dropped_crawler"] == 2
    events = health["events"]  # the accounting still adds up, the dropped bots counted as dropped
    assert events["accepted"] == events["stored"] + events["journaled"] + events["buffered"] + sum(
        events["dropped"].values()
    )


async def test_events_count_separates_humans_from_flagged_bots(running_admin: MakeApp, db: asyncpg.Connection) -> None:
    """Flagged bots are stored and counted apart: humans + bots = stored, per day and in all."""
    running = await running_admin()
    await running.post({"eventType": "p", "siteId": "acme.com"}, headers={"user-agent": CHROME})
    await running.post({"eventType": "c", "siteId": "acme.com"}, headers={"user-agent": "curl/8.4.0"})
    await running.post({"eventType": "c", "siteId": "acme.com"}, headers={"user-agent": BOT})
    await running.services.buffer.drain()
    await running.services.accounting.flush()
    body = (await running.client.get("/events/count", params={"client_id": "client_acme_corp"})).json()
    assert (body["total_events"], body["humans"], body["bots"]) == (3, 1, 2)
    assert body["days"][0]["bots"] == {"library": 1, "crawler": 1}


async def test_the_clients_own_addresses_are_flagged_as_bots(
    make_app: MakeApp, pixel: PixelManagement, db: asyncpg.Connection
) -> None:
    """An address in `features.bot_ip_exclusions` makes its events bots with reason ip_excluded."""
    pixel.domains["office.com"] = site_config("client_office", features={"bot_ip_exclusions": ["203.0.113.0/24"]})
    running = await make_app(client_host="203.0.113.7")
    await running.post({"eventType": "x", "siteId": "office.com"}, headers={"user-agent": CHROME})
    await running.services.buffer.drain()
    row = await db.fetchrow("SELECT bot, bot_reason FROM events_log")
    assert (row["bot"], row["bot_reason"]) == (True, "ip_excluded")


async def test_geography_comes_from_the_database_and_a_trusted_cdn_only(
    make_app: MakeApp, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """GEOIP_DATABASE fills country, region and city (city left out for gdpr); a CDN header counts only from a proxy."""
    database = str(write_city_database(tmp_path / "city.mmdb"))
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    direct = await make_app(client_host="203.0.113.7", geoip_database=database, trusted_proxies=trusted)
    proxied = await make_app(client_host="10.1.2.3", geoip_database=database, trusted_proxies=trusted)
    cdn = {"cf-ipcountry": "nl", "user-agent": CHROME}
    await direct.post({"eventType": "direct", "siteId": "acme.com"}, headers=cdn)
    await direct.post({"eventType": "gdpr", "siteId": "eu-shop.com"}, headers=cdn)
    await proxied.post(
        {"eventType": "proxied", "siteId": "acme.com"}, headers={**cdn, "x-forwarded-for": "198.51.100.4"}
    )
    await direct.services.buffer.drain()
    await proxied.services.buffer.drain()
    rows = {
        r["event_type"]: (r["country"], r["region"], r["city"])
        for r in await db.fetch(f"SELECT {COLUMNS} FROM events_log")
    }
    assert rows == {
        "direct": ("US", "CA", "San Francisco"),  # the header from an untrusted peer is ignored
        "gdpr": ("US", "CA", None),
        "proxied": ("NL", None, None),  # the trusted CDN's country; the database's finer places disagree with it
    }


async def test_a_journal_written_before_enrichment_replays_into_todays_columns(
    make_app: MakeApp, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Rows of the 16 columns an earlier release journaled are stored at startup, their new columns NULL."""
    # Today's rows without the consent field ("unknown": 4 + 7 bytes) and the enrichment NULLs before received_at.
    new_fields = len(copyformat.text("unknown")) + len(copyformat.ENRICH_NULLS) + copyformat.RECEIVED_BYTES
    old_rows = [
        (16).to_bytes(2, "big") + row[2:-new_fields] + row[-copyformat.RECEIVED_BYTES :]
        for row in records(3, "before-0009")
    ]
    dead = Journal(tmp_path / "data" / "journal", max_bytes=1 << 20, segment_bytes=1 << 16)
    dead.append(Batch(os.urandom(16), old_rows, {"client_acme_corp": 3}))
    dead._close_active()
    os.close(dead._lock_fd)  # what a SIGKILL leaves: the files, and the lock released
    await make_app()
    await wait_for_rows(db, 3)
    rows = await db.fetch("SELECT session_id, consent, bot, browser_family, country FROM events_log")
    assert {tuple(r.values()) for r in rows} == {("before-0009", None, None, None, None)}


async def test_the_trackers_webdriver_flag_makes_an_automation_bot_and_is_not_stored(
    make_app: MakeApp, db: asyncpg.Connection
) -> None:
    """`webdriver: true` from a browser's agent is an automation bot; it and `consent` never land in `extra`."""
    running = await make_app()
    await running.post(
        {"eventType": "batch", "siteId": "acme.com", "webdriver": True, "consent": {"analytics": True}, "note": "x",
         "events": [{"eventType": "a"}]},
        headers={"user-agent": CHROME},
    )  # fmt: skip
    await running.services.buffer.drain()
    row = await db.fetchrow("SELECT bot, bot_reason, extra FROM events_log")
    assert (row["bot"], row["bot_reason"], row["extra"]) == (True, "automation", {"note": "x"})
