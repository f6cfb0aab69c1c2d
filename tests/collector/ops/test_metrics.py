"""GET /metrics: what each counter, gauge and histogram says after real traffic, and that promtool accepts it."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import pkgutil

import asyncpg

import collector
from collector.ops.snapshot import STATS_COUNTERS, stats_objects
from tests.conftest import MakeApp, Running, wait_for_rows
from tests.pixel_management import PixelManagement
from tests.scrape import parse, run_promtool, value


async def scrape(running: Running) -> str:
    response = await running.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def test_metrics_count_requests_events_rejections_and_flushes(running: Running) -> None:
    """After a batch, a bad body and an unknown domain, the counters say so exactly, and the flush histograms agree."""
    batch = {"eventType": "batch", "siteId": "acme.com", "events": [{"eventType": f"e{i}"} for i in range(4)]}
    assert (await running.post(batch)).status_code == 200
    assert (await running.post({"eventType": "x", "siteId": "acme.com"})).status_code == 200
    bad = await running.client.post("/collect", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert (await running.post({"eventType": "x", "siteId": "stranger.org"})).status_code == 403
    await running.services.buffer.drain()
    assert (await running.client.get("/health")).status_code == 200

    samples = parse(await scrape(running))
    assert value(samples, "collector_http_requests_total", route="/collect", status="200") == 2
    assert value(samples, "collector_http_requests_total", route="/collect", status="400") == 1
    assert value(samples, "collector_http_requests_total", route="/collect", status="403") == 1
    assert value(samples, "collector_http_requests_total", route="/health", status="200") == 1
    assert value(samples, "collector_events_accepted_total") == 5
    assert value(samples, "collector_events_received_total") == 7
    assert value(samples, "collector_events_rejected_total", reason="invalid_json") == 1
    assert value(samples, "collector_events_rejected_total", reason="domain_not_authorized") == 1
    assert value(samples, "collector_events_rejected_total", reason="buffer_full") == 0
    assert value(samples, "collector_events_stored_total") == 5
    assert value(samples, "collector_events_dropped_total", reason="lost_on_close") == 0
    flushes = value(samples, "collector_flush_batch_size_events_count")
    assert flushes >= 1 and value(samples, "collector_flushes_total") == flushes
    assert value(samples, "collector_flush_batch_size_events_sum") == 5
    assert value(samples, "collector_flush_duration_seconds_count") == flushes
    assert value(samples, "collector_flush_failures_total") == 0
    assert value(samples, "collector_buffer_events") == 0
    assert value(samples, "collector_buffer_capacity_events") == 100_000
    assert value(samples, "collector_journal_bytes") == 0
    # acme.com looked up once, then served from the cache; stranger.org looked up once (a refusal).
    assert value(samples, "collector_auth_lookups_total") == 2
    assert value(samples, "collector_auth_cache_misses_total") == 2
    assert value(samples, "collector_auth_cache_hits_total") == 1
    assert value(samples, "collector_auth_lookup_duration_seconds_count") == 2
    assert value(samples, "collector_auth_lookup_failures_total") == 0
    assert value(samples, "collector_db_pool_max_connections") == 4
    assert value(samples, "collector_ready") == 1
    assert value(samples, "collector_build_info", version="0.1.0") == 1


async def test_metrics_track_lookup_failures_and_stale_decisions(make_app: MakeApp, pixel: PixelManagement) -> None:
    """pixel-management failing: a cached domain is served stale and counted; an uncached one fails and is counted."""
    running = await make_app(auth_cache_ttl_s=0.05)
    assert (await running.post({"eventType": "x", "siteId": "acme.com"})).status_code == 200
    await asyncio.sleep(0.1)  # acme.com's entry is now past its TTL: the next request looks it up again
    pixel.status = 503
    assert (await running.post({"eventType": "x", "siteId": "acme.com"})).status_code == 200
    assert (await running.post({"eventType": "x", "siteId": "shop.acme.com"})).status_code == 503
    samples = parse(await scrape(running))
    assert value(samples, "collector_auth_stale_served_total") == 1
    assert value(samples, "collector_auth_lookup_failures_total") == 2
    assert value(samples, "collector_events_rejected_total", reason="authorization_unavailable") == 1
    assert value(samples, "collector_http_requests_total", route="/collect", status="503") == 1


async def test_unknown_paths_share_one_route_label(running: Running) -> None:
    """Requests to paths the service does not serve are counted under route="other", not one series per path."""
    for path in ("/nope", "/wp-admin", "/a/b/c"):
        assert (await running.client.get(path)).status_code == 404
    samples = parse(await scrape(running))
    assert value(samples, "collector_http_requests_total", route="other", status="404") == 3
    assert not [key for key in samples if ("route", "/nope") in key[1]]


async def test_ready_gauge_drops_when_the_database_is_down(running: Running) -> None:
    """With the pool closed, the readiness check behind /readyz sets collector_ready to 0."""
    await running.services.store.pool.close()
    await running.services.metrics.check_ready()
    samples = parse(await scrape(running))
    assert value(samples, "collector_ready") == 0


async def test_durable_journaling_shows_in_the_metrics(make_app: MakeApp, db: asyncpg.Connection) -> None:
    """A durable request while COPY fails is journaled: journaled events, journal bytes and flush failures show it."""
    running = await make_app(ack_mode="durable")
    await db.execute("ALTER TABLE events_log RENAME TO events_log_away")
    try:
        assert (await running.post({"eventType": "x", "siteId": "acme.com"})).status_code == 200
        samples = parse(await scrape(running))
    finally:
        await db.execute("ALTER TABLE events_log_away RENAME TO events_log")
    assert value(samples, "collector_events_journaled_total") == 1
    assert value(samples, "collector_journal_bytes") > 0
    assert value(samples, "collector_flush_failures_total") >= 1
    await wait_for_rows(db, 1)


async def test_scrape_passes_promtool_check_metrics(running: Running) -> None:
    """promtool check metrics finds no problem in a real scrape after traffic (skipped without promtool)."""
    assert (await running.post({"eventType": "x", "siteId": "acme.com"})).status_code == 200
    await running.post({"eventType": "x", "siteId": "stranger.org"})
    await running.services.buffer.drain()
    text = await scrape(running)
    result = run_promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


async def test_metrics_answer_without_admin_token(make_app: MakeApp) -> None:
    """/metrics is a scrape target: it answers without the admin token (it holds no per-client figure)."""
    running = await make_app(admin_token="s3cret")
    assert (await running.client.get("/metrics")).status_code == 200


async def test_hostile_refusals_have_series_from_the_start_and_count(running: Running) -> None:
    """Refusals added against hostile input (invalid_site, request_rows_too_large, the edge's cut-offs) are
    exported at 0 before they happen, so alerts see them, and count what happened."""
    edge = running.services.edge.stats
    before = parse(await scrape(running))
    assert value(before, "collector_events_rejected_total", reason="invalid_site") == 0
    assert value(before, "collector_events_rejected_total", reason="request_rows_too_large") == 0
    for reason in ("headers_too_large", "read_timeouts", "idle_timeouts", "over_connection_limit"):
        assert value(before, "collector_edge_refused_total", reason=reason) == getattr(edge, reason)
    answer = await running.post({"eventType": "x", "siteId": "[::1%25\r\nforged]"})
    assert answer.status_code == 422 and answer.json()["error"] == "invalid_site"
    edge.idle_timeouts += 1  # what the edge does when it closes a silent connection
    after = parse(await scrape(running))
    assert value(after, "collector_events_rejected_total", reason="invalid_site") == 1
    assert value(after, "collector_edge_refused_total", reason="idle_timeouts") == edge.idle_timeouts


def test_every_stats_field_of_the_collector_has_a_metric() -> None:
    """Each dataclass named *Stats in collector/ is declared in STATS_COUNTERS with a row for every one of its fields:
    a counter added to a stats object without a metric fails here (they had drifted: journal and edge counters
    reached /health but not /metrics)."""
    found: set[type] = set()
    for module in pkgutil.walk_packages(collector.__path__, "collector."):
        if module.name == "collector.__main__":
            continue
        for name, obj in vars(importlib.import_module(module.name)).items():
            if name.endswith("Stats") and dataclasses.is_dataclass(obj) and obj.__module__ == module.name:
                found.add(obj)  # type: ignore[arg-type]
    assert found == set(STATS_COUNTERS), "stats classes without a STATS_COUNTERS entry, or entries of no class"
    for cls, table in STATS_COUNTERS.items():
        assert set(table) == {f.name for f in dataclasses.fields(cls)}, cls.__name__


async def test_every_stats_field_reaches_the_scrape_with_its_value(make_app: MakeApp) -> None:
    """Each declared stats field, set to a value of its own, reads back from /metrics under its metric and labels."""
    running = await make_app(ack_mode="durable")
    metrics = running.services.metrics.metrics
    expected = []
    for number, stats in enumerate(stats_objects(running.services), start=1):
        for offset, (name, (key, labels)) in enumerate(STATS_COUNTERS[type(stats)].items()):
            target = 1000 * number + offset + getattr(stats, name)
            setattr(stats, name, target)
            counter = metrics.counters[key]
            expected.append((counter._name, dict(zip(counter._labelnames, labels, strict=True)), target))
    assert {type(stats) for stats in stats_objects(running.services)} == set(STATS_COUNTERS)
    samples = parse(await scrape(running))
    for metric, labels, target in expected:
        assert value(samples, f"{metric}_total", **labels) == target, (metric, labels)


async def test_every_stats_field_reaches_health_with_its_value(make_app: MakeApp) -> None:
    """Each declared stats field, set to a value of its own, shows in /health too: the two never drift apart."""
    running = await make_app(ack_mode="durable")
    targets = {}
    for number, stats in enumerate(stats_objects(running.services), start=1):
        for offset, name in enumerate(STATS_COUNTERS[type(stats)]):
            targets[(type(stats).__name__, name)] = 7_000_000 + 1000 * number + offset
            setattr(stats, name, targets[(type(stats).__name__, name)])
    body = (await running.client.get("/health")).json()

    def numbers(value: object) -> list[object]:
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        return [value]

    shown = set(numbers(body))
    assert [key for key, target in targets.items() if target not in shown] == []
