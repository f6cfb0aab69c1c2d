"""Issue 11, item 2: nothing a client sends reaches logs or dead letters raw, long or unredacted."""

from __future__ import annotations

import logging

import asyncpg
import orjson
import pytest

from collector.storage.accounting import SAMPLES_PER_KIND
from tests.conftest import Running
from tests.pixel_management import PixelManagement

HOSTILE_SITE_IDS = [
    "[::1%\r\nINFO collector.ingest.auth: Domain admin.com authorized for client forged\x1b[2J]",
    "[::1%" + "x" * 200_000 + "]",
    "unknown-\u2028-site.com\n",
    "never-registered.example",
]


async def test_hostile_site_ids_never_forge_or_flood_log_lines(
    running: Running, pixel: PixelManagement, caplog: pytest.LogCaptureFixture
) -> None:
    """CR/LF, terminal escapes and 200 KB siteIds leave no control character and no long line in any log record."""
    caplog.set_level(logging.DEBUG)
    for site_id in HOSTILE_SITE_IDS:
        response = await running.post({"eventType": "pageview", "siteId": site_id})
        assert response.status_code in (403, 422), response.text
    pixel.status = 503  # lookups now fail and log a warning naming the domain
    await running.post({"eventType": "pageview", "siteId": "another-unknown.example"})
    messages = [r.getMessage() for r in caplog.records]
    assert messages, "expected at least the failed lookup's warning"
    for message in messages:
        assert not any(c in message for c in "\r\n\x1b\u2028"), message[:300]
        assert len(message) <= 1000, message[:300]


async def test_dead_letter_samples_are_capped_and_redacted(running: Running, db: asyncpg.Connection) -> None:
    """A rejected 1 MB body and a rejected event with personal data leave samples ≤ 4 KiB without that data."""
    personal = {
        "eventType": "x", "siteId": "acme.com", "eventId": "not-a-uuid",
        "eventData": {"password": "hunter2-secret", "note": "mail jane.doe@example.org or +1 (415) 555-0172"},
    }  # fmt: skip
    assert (await running.post(personal)).status_code == 422
    huge = orjson.dumps({"eventType": "x", "siteId": "[::1%" + "y" * 1_000_000 + "]", "contact": "bob@example.net"})
    response = await running.client.post("/collect", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 422
    await running.services.accounting.flush()
    letters = await db.fetch("SELECT reason, detail, payload FROM dead_letters ORDER BY id")
    assert [r["reason"] for r in letters] == ["invalid_event", "invalid_site"]
    for letter in letters:
        assert len(letter["payload"].encode()) <= 4096 + 64
        for secret in ("hunter2", "jane.doe@example.org", "555-0172"):
            assert secret not in letter["payload"] and secret not in letter["detail"]
    assert "[REDACTED]" in letters[0]["payload"]


async def test_a_flood_of_one_mistake_keeps_a_few_samples_and_every_count(
    running: Running, db: asyncpg.Connection
) -> None:
    """200 identical refusals between two flushes are all counted but leave at most SAMPLES_PER_KIND samples."""
    for _ in range(200):
        assert (await running.post({"eventType": "x", "siteId": "acme.com", "eventId": "nope"})).status_code == 422
    await running.services.accounting.flush()
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == SAMPLES_PER_KIND
    counted = await db.fetchval("SELECT count FROM client_daily_counts WHERE metric = 'rejected:invalid_event'")
    assert counted == 200
