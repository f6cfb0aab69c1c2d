"""Client IPs: per-client storage policy and X-Forwarded-For from trusted proxies only."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import asyncpg

from collector.ingest.proxies import client_ip
from tests.conftest import MakeApp


async def test_standard_client_stores_the_ip(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """A standard client's events keep the raw address and no hash."""
    running = await make_app(client_host="198.51.100.20")
    assert (await running.post({"eventType": "a", "siteId": "acme.com"})).status_code == 200
    await running.services.buffer.drain()
    row = await db.fetchrow("SELECT ip, ip_hash FROM events_log")
    assert (str(row["ip"]), row["ip_hash"]) == ("198.51.100.20", None)


async def test_gdpr_client_stores_only_a_keyed_full_length_hash(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """A gdpr client's raw IP never reaches the table: only HMAC-SHA256(secret + salt, ip) in full."""
    running = await make_app(client_host="198.51.100.21")
    assert (await running.post({"eventType": "a", "siteId": "eu-shop.com", "eventData": {"k": 1}})).status_code == 200
    await running.services.buffer.drain()
    row = await db.fetchrow("SELECT * FROM events_log")
    expected = hmac.new(b"test-secret" + b"salt-client_eu_shop", b"198.51.100.21", hashlib.sha256).hexdigest()
    assert row["ip"] is None
    assert row["ip_hash"] == expected
    assert len(row["ip_hash"]) == 64
    whole_row = await db.fetchval("SELECT e::text FROM events_log e")
    assert "198.51.100.21" not in whole_row


async def test_ip_collection_disabled_stores_no_ip(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """ip_collection.enabled = false stores neither the address nor a hash."""
    running = await make_app()
    assert (await running.post({"eventType": "a", "siteId": "no-ip.com"})).status_code == 200
    await running.services.buffer.drain()
    row = await db.fetchrow("SELECT ip, ip_hash FROM events_log")
    assert (row["ip"], row["ip_hash"]) == (None, None)


async def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """X-Forwarded-For names the client only when the peer is in TRUSTED_PROXIES."""
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    behind_proxy = await make_app(client_host="10.1.2.3", trusted_proxies=trusted)
    direct = await make_app(client_host="198.51.100.9", trusted_proxies=trusted)
    headers = {"x-forwarded-for": "192.0.2.66, 10.9.9.9"}
    assert (await behind_proxy.post({"eventType": "proxied", "siteId": "acme.com"}, headers=headers)).status_code == 200
    assert (await direct.post({"eventType": "direct", "siteId": "acme.com"}, headers=headers)).status_code == 200
    await behind_proxy.services.buffer.drain()
    await direct.services.buffer.drain()
    rows = {r["event_type"]: str(r["ip"]) for r in await db.fetch("SELECT event_type, ip FROM events_log")}
    assert rows == {"proxied": "192.0.2.66", "direct": "198.51.100.9"}


def test_forwarded_for_is_walked_from_the_right() -> None:
    """The first untrusted address from the right is the client; spoofed entries left of it are ignored."""
    trusted = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))
    assert client_ip("10.0.0.1", "6.6.6.6, 192.0.2.1, 10.0.0.2", trusted) == "192.0.2.1"
    assert client_ip("10.0.0.1", "10.0.0.3, 10.0.0.2", trusted) == "10.0.0.3"
    assert client_ip("10.0.0.1", "garbage, 192.0.2.1", trusted) == "192.0.2.1"
    assert client_ip("10.0.0.1", "192.0.2.1, garbage", trusted) == "10.0.0.1"
    assert client_ip("192.0.2.50", "1.1.1.1", trusted) == "192.0.2.50"
    assert client_ip("10.0.0.1", None, trusted) == "10.0.0.1"
    assert client_ip("10.0.0.1", "1.1.1.1", ()) == "10.0.0.1"
