"""The service's plain counters and gauges read into one Snapshot: what /metrics exports (ops.metrics applies it)."""

from __future__ import annotations

import time
from collections import Counter as PlainCounter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.edge.protocol import EdgeStats
from collector.enrich.enricher import BotStats, EnricherStats
from collector.ingest.auth import AuthStats
from collector.ops.metrics import Snapshot
from collector.storage.buffer import BufferStats
from collector.storage.journal import JournalStats
from collector.storage.spill import StorageStats

if TYPE_CHECKING:
    from collector.services import Services
    from pipeline.scheduler import Pipeline

# Every field of the collector's stats objects, and the counter (key in Metrics.counters, label values) it is
# exported as: the one declaration snapshot_of reads. /health shows the same objects whole, so nothing reaches one
# and not the other; tests/collector/ops/test_metrics.py fails when a stats field has no row here.
STATS_COUNTERS: dict[type[Any], dict[str, tuple[str, tuple[str, ...]]]] = {
    AuthStats: {
        "hits": ("auth_hits", ()), "misses": ("auth_misses", ()), "stale_served": ("auth_stale", ()),
        "lookups": ("auth_lookups", ()), "lookup_failures": ("auth_failures", ()),
    },
    StorageStats: {
        "stored": ("stored", ()), "journaled": ("journaled", ()), "replayed": ("replayed", ()),
        "deduplicated": ("deduplicated", ()), "dropped_unstorable": ("dropped", ("unstorable",)),
        "copy_failures": ("flush_failures", ()), "journal_full": ("journal_full", ()),
    },
    BufferStats: {
        "batches": ("flushes", ()), "rows": ("flushed", ()), "lost_on_close": ("dropped", ("lost_on_close",)),
    },
    JournalStats: {
        "records_written": ("journal_records", ()), "rows_written": ("journal_rows", ()),
        "torn_tails": ("journal_torn_tails", ()), "corrupt_records": ("journal_corrupt", ()),
        "adopted_segments": ("journal_adopted", ()),
    },
    EdgeStats: {reason: ("edge_refused", (reason,)) for reason in EdgeStats.__slots__},
    EnricherStats: {
        "requests": ("enriched_requests", ()), "agent_misses": ("enrich_misses", ("agent",)),
        "place_misses": ("enrich_misses", ("place",)),
    },
    # flagged_crawler → collector_bot_events_total{action="flagged", reason="crawler"}
    BotStats: {name: ("bot_events", tuple(name.split("_", 1))) for name in BotStats.__slots__},
}  # fmt: skip


def labelled(counts: PlainCounter[str] | Mapping[str, int]) -> dict[tuple[str, ...], float]:
    """A plain counter keyed by one label value, as Snapshot.labelled wants it."""
    return {(k,): float(v) for k, v in counts.items()}


@dataclass(slots=True)
class RequestCounts:
    """Answered requests, bumped by CollectorApp: /collect by status alone (one int-keyed bump on the hot path)."""

    collect: PlainCounter[int] = field(default_factory=PlainCounter)
    other: PlainCounter[tuple[str, int]] = field(default_factory=PlainCounter)


def snapshot_of(services: Services, requests: RequestCounts) -> Snapshot:
    """Read the service's plain counters and gauges (on the request loop; storage's ints are read as they are)."""
    ingest, buffer = services.ingest, services.buffer
    pool_size, pool_in_use, pool_max, pool_waiting = services.store.pool_stats()
    by_route: dict[tuple[str, ...], float] = {("/collect", str(s)): float(n) for s, n in requests.collect.items()}
    by_route.update({(route, str(status)): float(n) for (route, status), n in requests.other.items()})
    snapshot = Snapshot(
        counters={"received": ingest.accepted + sum(ingest.rejected.values()), "accepted": ingest.accepted},
        labelled={
            "requests": by_route,
            "rejected": labelled(ingest.rejected),
            "preflights": labelled(services.collect.preflights),
        },
        gauges={
            "buffer_events": buffer.depth,
            "buffer_capacity": buffer.capacity,
            "buffer_bytes": buffer.bytes,
            "buffer_capacity_bytes": buffer.max_bytes,
            "journal_bytes": services.storage.journal_bytes,
            "pool_size": pool_size,
            "pool_max": pool_max,
            "pool_in_use": pool_in_use,
            "pool_waiting": pool_waiting,
        },
        labelled_gauges={},
    )
    if services.pipeline is not None:
        _add_pipeline(snapshot, services.pipeline)
    for stats in stats_objects(services):
        for name, (key, labels) in STATS_COUNTERS[type(stats)].items():
            value = float(getattr(stats, name))
            if labels:
                snapshot.labelled.setdefault(key, {})[labels] = value  # type: ignore[index]
            else:
                snapshot.counters[key] = value
    return snapshot


def _add_pipeline(snapshot: Snapshot, pipeline: Pipeline) -> None:
    """The pipeline's figures, where this process runs it (ROLE all or pipeline)."""
    stats = pipeline.stats
    stages = {"export": stats.export, "process": stats.process}
    now = time.time()
    oldest = {"export": stats.oldest_unexported_at, "process": stats.oldest_unprocessed_at}
    snapshot.counters["retention_dropped"] = stats.retention_dropped
    snapshot.labelled.update({
        "pipeline_runs": {
            (stage, result): float(n)
            for stage, s in stages.items()
            for result, n in (("success", s.runs - s.failures), ("failure", s.failures), ("busy", s.skipped))
        },
        "pipeline_objects": {(stage,): float(s.objects) for stage, s in stages.items()},
        "pipeline_rows": {(stage,): float(s.rows) for stage, s in stages.items()},
        "client_failures": labelled(stats.client_failures),
        "client_config_refused": labelled(pipeline.processor.clients.refused),
    })  # fmt: skip
    snapshot.gauges["pipeline_retry_objects"] = stats.retry_objects
    snapshot.gauges["pipeline_failing_clients"] = stats.failing_clients
    snapshot.labelled_gauges.update({
        "pipeline_last_success": {(k,): s.last_success for k, s in stages.items() if s.last_success is not None},
        "pipeline_lag": {(k,): 0.0 if t is None else max(0.0, now - t) for k, t in oldest.items()},
        "pipeline_quarantined": {("raw",): stats.quarantined_raw, ("client",): stats.quarantined_client},
    })  # fmt: skip


def stats_objects(services: Services) -> list[Any]:
    """The collector's stats objects, each of a type STATS_COUNTERS declares (the journal's only when there is one)."""
    found: list[Any] = [services.authorizer.stats, services.storage.stats, services.buffer.stats, services.edge.stats]
    if services.storage.journal is not None:
        found.append(services.storage.journal.stats)
    if services.enricher is not None:
        found += [services.enricher.stats, services.enricher.bot_stats]
    return found
