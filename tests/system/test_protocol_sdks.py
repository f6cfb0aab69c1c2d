"""The real Segment, RudderStack and Snowplow Python libraries, unchanged, pointed at `python -m collector` on
loopback: every call type they offer, with their batching (and RudderStack's gzip), stored once with the mapped
fields."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from collector.ingest.mapping.common import ID_NAMESPACE
from tests.harness import collector_process, wait_until_live
from tests.pixel_management import site_config

pytestmark = pytest.mark.timeout(120)

KEY = "wkSegmentTest0001"
RUDDER_KEY = "wkRudderTest0001"
OTHER_KEY = "wkOtherClient0001"


@pytest.fixture
def server(database_url: str, tmp_path: Path, db: asyncpg.Connection) -> Iterator[str]:
    """The collector with sdk.test (two write keys) and other.test (one) in its domains file."""
    domains = {
        "sdk.test": {**site_config("client_sdk"), "write_keys": [KEY, RUDDER_KEY]},
        "other.test": {**site_config("client_other"), "write_keys": [OTHER_KEY]},
    }
    path = tmp_path / "domains.json"
    path.write_text(json.dumps(domains))
    with collector_process(database_url, tmp_path, AUTHORIZED_DOMAINS_FILE=str(path), FLUSH_INTERVAL_MS="20") as (
        proc,
        url,
    ):
        asyncio.run(wait_until_live(proc, url))
        yield url


async def rows(db: asyncpg.Connection, expected: int) -> dict[uuid.UUID, asyncpg.Record]:
    """The stored rows by event id, once `expected` are there (flushes are asynchronous)."""
    async with asyncio.timeout(20):
        while (n := await db.fetchval("SELECT count(*) FROM events_log")) < expected:
            await asyncio.sleep(0.05)
    assert n == expected
    found = await db.fetch("SELECT * FROM events_log")
    return {r["event_id"]: r for r in found}


def send_all(client: Any, page_url: str) -> dict[str, str]:
    """Every Segment call type through a client library; the message ids it was given, by call."""
    ids = {call: str(uuid.uuid4()) for call in ("track", "page", "screen", "identify", "group")}
    ids["alias"] = "alias-message-not-a-uuid"
    context = {"page": {"url": page_url, "path": "/pricing", "referrer": "https://search.example/"}}
    client.track("user-1", "Signed Up", {"plan": "pro"}, context=context, message_id=ids["track"],
                 anonymous_id="anon-1")  # fmt: skip
    client.page("user-1", "Docs", "Pricing", {"url": page_url}, message_id=ids["page"])
    client.screen("user-1", "App", "Home", {"tab": 1}, message_id=ids["screen"])
    client.identify("user-1", {"email": "a@b.test"}, message_id=ids["identify"])
    client.group("user-1", "group-9", {"name": "Acme"}, message_id=ids["group"])
    client.alias("anon-1", "user-1", message_id=ids["alias"])
    client.flush()
    return ids


async def test_segment_library_sends_every_call_type_and_each_is_stored_once_with_the_mapped_fields(
    server: str, db: asyncpg.Connection
) -> None:
    """analytics-python's batch of all six calls is stored once each: type, id (uuid5 for a non-UUID), data, ids."""
    from segment.analytics.client import Client

    client = Client(KEY, host=server, upload_size=3, max_retries=1, sync_mode=False)
    ids = await asyncio.to_thread(send_all, client, "https://sdk.test/pricing?x=1")
    client.join()
    stored = await rows(db, 6)
    track = stored[uuid.UUID(ids["track"])]
    assert (track["event_type"], track["site_id"], track["client_id"]) == ("Signed Up", "sdk.test", "client_sdk")
    assert track["event_data"] == {"plan": "pro"}
    assert (track["visitor_id"], track["path"], track["referrer"]) == ("anon-1", "/pricing", "https://search.example/")
    assert track["user_agent"].startswith("analytics-python/")
    extra = track["extra"]
    assert extra["userId"] == "user-1" and extra["context"]["library"]["name"] == "analytics-python"
    assert "writeKey" not in extra and "sentAt" not in extra
    assert stored[uuid.UUID(ids["page"])]["event_type"] == "pageview"
    screen = stored[uuid.UUID(ids["screen"])]
    assert (screen["event_type"], screen["site_id"]) == ("screen", "sdk.test")  # no page: the key's domain
    assert stored[uuid.UUID(ids["identify"])]["event_data"] == {"email": "a@b.test"}
    assert stored[uuid.UUID(ids["group"])]["extra"]["groupId"] == "group-9"
    alias = stored[uuid.uuid5(ID_NAMESPACE, "segment:alias-message-not-a-uuid")]
    assert (alias["event_type"], alias["extra"]["previousId"]) == ("alias", "anon-1")


async def test_rudderstack_library_sends_gzip_batches_stored_once(server: str, db: asyncpg.Connection) -> None:
    """rudder-sdk-python (gzip bodies by default) sends the same six calls, each stored once."""
    from rudderstack.analytics.client import Client

    client = Client(RUDDER_KEY, host=server, upload_size=4, max_retries=1, gzip=True)
    ids = await asyncio.to_thread(send_all, client, "https://sdk.test/pricing")
    client.join()
    stored = await rows(db, 6)
    assert {str(i) for i in stored} - {ids[c] for c in ids if c != "alias"} == {
        str(uuid.uuid5(ID_NAMESPACE, "segment:alias-message-not-a-uuid"))
    }
    assert {r["client_id"] for r in stored.values()} == {"client_sdk"}


@pytest.fixture
def limited_server(database_url: str, tmp_path: Path, db: asyncpg.Connection) -> Iterator[str]:
    """The collector with sdk.test and a per-address rate limit of one request a second: the libraries meet 429."""
    domains = {"sdk.test": {**site_config("client_sdk"), "write_keys": [KEY, RUDDER_KEY]}}
    path = tmp_path / "domains.json"
    path.write_text(json.dumps(domains))
    env = {"AUTHORIZED_DOMAINS_FILE": str(path), "RATE_LIMIT_IP_PER_S": "1", "RATE_LIMIT_IP_BURST": "1"}
    with collector_process(database_url, tmp_path, **env) as (proc, url):
        asyncio.run(wait_until_live(proc, url))
        yield url


@pytest.mark.parametrize("library", ["segment", "rudderstack"])
async def test_libraries_retry_what_the_rate_limit_refused_and_every_event_is_stored_once(
    limited_server: str, db: asyncpg.Connection, library: str
) -> None:
    """Batches past the rate limit get 429 with Retry-After; each library retries them: all 12 events stored once,
    no refused batch stored at all (a 429 stores nothing)."""
    if library == "segment":
        from segment.analytics.client import Client as Segment

        client: Any = Segment(KEY, host=limited_server, upload_size=2, max_retries=10)
    else:
        from rudderstack.analytics.client import Client as Rudder

        client = Rudder(RUDDER_KEY, host=limited_server, upload_size=2, max_retries=10)

    def send() -> None:
        for i in range(12):
            client.track("user-1", f"e{i}", {"i": i}, message_id=str(uuid.uuid4()))
        client.flush()

    await asyncio.to_thread(send)
    client.join()
    stored = await rows(db, 12)
    assert sorted(r["event_type"] for r in stored.values()) == sorted(f"e{i}" for i in range(12))
    async with httpx.AsyncClient(base_url=limited_server) as http:
        rejected = (await http.get("/health")).json()["events"]["rejected"]
    assert rejected.get("rate_limited", 0) > 0  # the libraries did meet the limit


async def test_a_resent_segment_batch_is_stored_again_but_counted_once_by_event_id(
    server: str, db: asyncpg.Connection
) -> None:
    """A retried batch (same messageIds) is taken once in events_unique, as /collect's resends are."""
    batch = {"batch": [{"type": "track", "event": "e", "messageId": "m-1", "anonymousId": "a"}]}
    async with httpx.AsyncClient(base_url=server, auth=(KEY, "")) as client:
        for _ in range(2):
            assert (await client.post("/v1/batch", json=batch)).json() == {"success": True}
    await rows(db, 2)
    assert await db.fetchval("SELECT count(*) FROM events_unique") == 1


async def test_a_wrong_or_foreign_write_key_is_refused_as_the_sdk_expects_and_counted(
    server: str, db: asyncpg.Connection
) -> None:
    """No key or an unknown one: 401; another client's key for this site's page: 403; nothing stored."""
    track = {"event": "e", "anonymousId": "a", "context": {"page": {"url": "https://sdk.test/"}}}
    async with httpx.AsyncClient(base_url=server) as client:
        unknown = await client.post("/v1/track", json=track, auth=("wkNobodyHasThis1", ""))
        missing = await client.post("/v1/track", json=track)
        foreign = await client.post("/v1/track", json=track, auth=(OTHER_KEY, ""))
        health = (await client.get("/health")).json()
    assert (unknown.status_code, unknown.json()["success"], unknown.json()["code"]) == (401, False, "invalid_write_key")
    assert missing.status_code == 401
    assert (foreign.status_code, foreign.json()["code"]) == (403, "write_key_mismatch")
    assert await db.fetchval("SELECT count(*) FROM events_log") == 0
    assert json.dumps(health).count("invalid_write_key") >= 1


async def test_snowplow_tracker_sends_every_event_type_by_post_and_get_each_stored_once(
    server: str, db: asyncpg.Connection
) -> None:
    """snowplow-tracker's page view, ping, structured and self-describing events (with contexts), by a batching POST
    emitter and a GET emitter, are stored once each under the app id's site."""
    from snowplow_tracker import Emitter, SelfDescribingJson, Tracker
    from snowplow_tracker.events import PagePing, PageView, SelfDescribing, StructuredEvent

    port = int(server.rsplit(":", 1)[1])

    def send(method: str) -> None:
        emitter = Emitter("127.0.0.1", protocol="http", port=port, method=method, batch_size=2)  # type: ignore[arg-type]
        tracker = Tracker("ns", emitter, app_id="sdk.test")
        entity = SelfDescribingJson("iglu:com.acme/user/jsonschema/1-0-0", {"tier": "gold"})
        tracker.track(PageView("https://sdk.test/a", "A", "https://ref.test/", context=[entity]))
        tracker.track(PagePing("https://sdk.test/a", min_x=0, max_x=10, min_y=0, max_y=20))
        tracker.track(StructuredEvent("shop", "add", "sku-1", value=3))
        tracker.track(SelfDescribing(SelfDescribingJson("iglu:com.acme/signup/jsonschema/1-0-0", {"plan": "x"})))
        emitter.flush()

    await asyncio.to_thread(send, "post")
    await asyncio.to_thread(send, "get")
    stored = await rows(db, 8)
    by_type: dict[str, list[asyncpg.Record]] = {}
    for r in stored.values():
        by_type.setdefault(r["event_type"], []).append(r)
    assert {t: len(v) for t, v in by_type.items()} == {"pageview": 2, "page_ping": 2, "structured": 2, "signup": 2}
    view = by_type["pageview"][0]
    assert (view["site_id"], view["path"], view["referrer"]) == ("sdk.test", "/a", "https://ref.test/")
    assert view["extra"]["contexts"][0]["data"] == {"tier": "gold"}
    assert by_type["structured"][0]["event_data"]["action"] == "add"
    assert by_type["signup"][0]["event_data"] == {"plan": "x"}


@pytest.fixture
async def plausible_answer(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server) as client:
        yield client


async def test_plausible_event_is_answered_202_ok_and_stored_under_its_domain(
    plausible_answer: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Plausible's documented body (and its script's short names) answer 202 `ok`; an unknown domain 403."""
    event = {"name": "pageview", "url": "https://sdk.test/p?q=1", "domain": "sdk.test", "props": {"a": 1},
             "revenue": {"currency": "EUR", "amount": "9.5"}}  # fmt: skip
    ok = await plausible_answer.post("/api/event", json=event, headers={"user-agent": "Mozilla/5.0"})
    script = {"n": "signup", "u": "https://sdk.test/", "d": "sdk.test", "p": '{"b":2}'}  # the script's short names
    short = await plausible_answer.post(
        "/api/event", content=json.dumps(script), headers={"content-type": "text/plain"}
    )
    unknown = await plausible_answer.post("/api/event", json={**event, "domain": "nobody.test"})
    assert (ok.status_code, ok.text, short.status_code) == (202, "ok", 202)
    assert unknown.status_code == 403 and "errors" in unknown.json()
    stored = {r["event_type"]: r for r in (await rows(db, 2)).values()}
    page = stored["pageview"]
    assert (page["site_id"], page["path"], page["event_data"]) == ("sdk.test", "/p", {"a": 1})
    assert page["extra"]["revenue"] == {"currency": "EUR", "amount": "9.5"}
    assert stored["signup"]["event_data"] == {"b": 2}
