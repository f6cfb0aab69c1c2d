"""Metrics: the Prometheus metric objects, synced from the plain counters the service keeps, and /metrics' text.

The hot path only bumps plain ints (`Ingest.accepted`, `Ingest.rejected`, `BufferStats`, `StorageStats`,
`AuthStats`, the request counters of `CollectorApp`); `MetricsSync` turns them into Prometheus metrics once a second
and at every scrape, incrementing each counter by what it grew since the last sync. Histograms are observed where
the thing happens, once per flush and once per authorization lookup — never once per request.

With WORKERS>1, prometheus-client's multiprocess mode sums the workers: `__main__` points
PROMETHEUS_MULTIPROC_DIR at DATA_DIR/metrics (emptied at start and removed at exit) before any worker starts, each
worker writes its values there, and whichever worker answers a scrape reads them all.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from collector import __version__
from collector.ops.metricsdir import MULTIPROC_ENV
from collector.ops.periodic import Periodic

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

SYNC_INTERVAL_S = 1.0
# Readiness pings PostgreSQL; once every few syncs is plenty for an alert that waits minutes.
READY_EVERY_SYNCS = 5

# The reasons Ingest counts and the buffer drops for, exported at 0 from the start so that rate() and alerts see
# a series before the first occurrence.
REJECT_REASONS = (
    "invalid_json", "invalid_event", "invalid_site", "domain_not_authorized", "origin_mismatch",
    "request_rows_too_large", "rate_limited", "authorization_unavailable", "buffer_full", "shutting_down",
)  # fmt: skip

DROP_REASONS = ("lost_on_close", "unstorable")
CLIENT_FAILURE_REASONS = ("config", "store", "error")
CONFIG_SOURCES = ("pixel_management", "storage_file")

FLUSH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
FLUSH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LOOKUP_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


@dataclass(slots=True)
class Snapshot:
    """Everything one sync reads from the service: plain numbers, gathered on the request loop."""

    counters: dict[str, float] = field(default_factory=dict)
    labelled: dict[str, Mapping[tuple[str, ...], float]] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    labelled_gauges: dict[str, Mapping[tuple[str, ...], float]] = field(default_factory=dict)


class Metrics:
    """One worker's metric objects in its own registry (two apps in one process, as in tests, do not collide)."""

    def __init__(self, *, multiproc_dir: Path | None, version: str | None = None) -> None:
        if multiproc_dir is not None and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                f"WORKERS>1 needs {MULTIPROC_ENV} set before prometheus_client is imported"
                " (python -m collector does it)"
            )
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, list(labels), registry=r)

        def gauge(name: str, doc: str, labels: Iterable[str] = (), mode: str = "liveall") -> Gauge:
            # liveall: one series per live worker (label pid), so that a full buffer in one worker is not averaged
            # away; a single-process service has no pid label.
            return Gauge(name, doc, list(labels), registry=r, multiprocess_mode=mode)  # type: ignore[arg-type]

        self.counters: dict[str, Counter] = {
            "requests": counter("collector_http_requests_total", "HTTP requests answered", ("route", "status")),
            "received": counter("collector_events_received_total", "Events received (accepted + rejected)"),
            "accepted": counter("collector_events_accepted_total", "Events accepted into the buffer"),
            "rejected": counter("collector_events_rejected_total", "Events (or requests) refused", ("reason",)),
            "stored": counter("collector_events_stored_total", "Events committed to PostgreSQL by live flushes"),
            "journaled": counter("collector_events_journaled_total", "Events fsync'd to the spill journal"),
            "replayed": counter("collector_events_replayed_total", "Journaled events committed on replay"),
            "deduplicated": counter(
                "collector_events_deduplicated_total", "Events of batches found already committed (retries, replays)"
            ),
            "dropped": counter("collector_events_dropped_total", "Accepted events not kept (stays 0)", ("reason",)),
            "edge_refused": counter(
                "collector_edge_refused_total",
                "Connections or requests cut off below the app (header size, read or idle deadlines, connection cap)",
                ("reason",),
            ),
            "flushes": counter("collector_flushes_total", "Batches the flusher got committed or journaled"),
            "flush_failures": counter("collector_flush_failures_total", "Failed COPY attempts (each retry counts)"),
            "journal_full": counter("collector_journal_full_total", "Batches that found no room in the journal"),
            "journal_corrupt": counter(
                "collector_journal_corrupt_records_total", "Corrupt journal records moved to quarantine"
            ),
            "flushed": counter("collector_flushed_events_total", "Events the flusher handed to storage"),
            "journal_records": counter("collector_journal_records_written_total", "Records fsync'd to the journal"),
            "journal_rows": counter("collector_journal_rows_written_total", "Events in records written to the journal"),
            "journal_torn_tails": counter(
                "collector_journal_torn_tails_total", "Journal segments whose last record was cut short (a crash)"
            ),
            "journal_adopted": counter(
                "collector_journal_adopted_segments_total", "Journal segments taken over from dead workers"
            ),
            "enriched_requests": counter(
                "collector_enriched_requests_total",
                "Requests whose rows storage's thread enriched (docs/enrichment.md)",
            ),
            "enrich_misses": counter(
                "collector_enrich_cache_misses_total",
                "User agents parsed and addresses looked up (cache misses)",
                ("cache",),
            ),
            "bot_events": counter(
                "collector_bot_events_total",
                "Bot events stored flagged, or dropped by their client's policy, by reason",
                ("action", "reason"),
            ),
            "preflights": counter("collector_cors_preflights_total", "CORS preflights answered", ("result",)),
            "auth_hits": counter("collector_auth_cache_hits_total", "Authorizations answered from a fresh cache entry"),
            "auth_misses": counter("collector_auth_cache_misses_total", "Authorizations that needed a lookup"),
            "auth_stale": counter(
                "collector_auth_stale_served_total", "Cached decisions served past their TTL while lookups failed"
            ),
            "auth_lookups": counter("collector_auth_lookups_total", "Lookups sent to the domain directory"),
            "auth_failures": counter("collector_auth_lookup_failures_total", "Lookups that failed (unavailable)"),
            "pipeline_runs": counter(
                "collector_pipeline_runs_total",
                "Export / processing runs by result (busy: another held the lock)",
                ("stage", "result"),
            ),
            "pipeline_objects": counter(
                "collector_pipeline_objects_total", "Objects written (raw; per client for process)", ("stage",)
            ),
            "pipeline_rows": counter("collector_pipeline_rows_total", "Events written to objects", ("stage",)),
            "retention_dropped": counter(
                "collector_retention_partitions_dropped_total", "Day partitions dropped by retention"
            ),
            "client_failures": counter(
                "collector_pipeline_client_failures_total",
                "Client objects processing could not write (config: refused configuration; store: bucket unreachable)",
                ("reason",),
            ),
            "client_config_refused": counter(
                "collector_pipeline_client_config_refused_total",
                "Client storage configurations refused (pixel_management answers, storage_file entries)",
                ("source",),
            ),
        }
        self.gauges: dict[str, Gauge] = {
            "buffer_events": gauge("collector_buffer_events", "Events held only in this worker's memory"),
            "buffer_capacity": gauge("collector_buffer_capacity_events", "BUFFER_MAX_EVENTS"),
            "buffer_bytes": gauge("collector_buffer_bytes", "Bytes of rows held only in memory"),
            "buffer_capacity_bytes": gauge("collector_buffer_capacity_bytes", "BUFFER_MAX_BYTES"),
            "journal_bytes": gauge("collector_journal_bytes", "Bytes in this worker's spill journal"),
            "pool_size": gauge("collector_db_pool_connections", "Connections open in the pool"),
            "pool_max": gauge("collector_db_pool_max_connections", "DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW"),
            "pool_in_use": gauge("collector_db_pool_in_use_connections", "Pool connections checked out"),
            "pool_waiting": gauge("collector_db_pool_waiting_requests", "Tasks waiting for a pool connection"),
            "ready": gauge("collector_ready", "1 when /readyz would answer 200, else 0"),
            # max across workers and instances: the last success anywhere, and the lag every worker reads from the
            # same tables (so a non-leader reports the leader's progress, not a stale value of its own).
            "pipeline_last_success": gauge(
                "collector_pipeline_last_success_timestamp_seconds",
                "Unix time of the last successful run of a stage",
                ("stage",),
                "max",
            ),
            "pipeline_retry_objects": gauge(
                "collector_pipeline_retry_objects",
                "Client objects waiting for a retry (processing_retries), read from the shared table",
                mode="livemax",
            ),
            "pipeline_failing_clients": gauge(
                "collector_pipeline_failing_clients",
                "Clients with objects waiting for a retry, read from the shared table",
                mode="livemax",
            ),
            "pipeline_quarantined": gauge(
                "collector_pipeline_quarantined_objects",
                "Objects left alone after PROCESS_MAX_ATTEMPTS failures until an operator releases them: raw (a whole"
                " raw object) or client (one client's object of one)",
                ("kind",),
                "livemax",
            ),
            "pipeline_lag": gauge(
                "collector_pipeline_lag_seconds",
                "export: age of the oldest event not exported; process: age of the oldest raw object not processed",
                ("stage",),
                "livemax",
            ),
        }
        self.flush_size = Histogram(
            "collector_flush_batch_size_events", "Events per flush", buckets=FLUSH_SIZE_BUCKETS, registry=r
        )
        self.flush_seconds = Histogram(
            "collector_flush_duration_seconds",
            "Time to get one batch committed or journaled, retries included",
            buckets=FLUSH_SECONDS_BUCKETS,
            registry=r,
        )
        self.lookup_seconds = Histogram(
            "collector_auth_lookup_duration_seconds",
            "Domain directory lookup latency",
            buckets=LOOKUP_SECONDS_BUCKETS,
            registry=r,
        )
        build = gauge("collector_build_info", "Collector and Python versions", ("version", "python"), "livemax")
        build.labels(version or __version__, platform.python_version()).set(1)
        for reason in REJECT_REASONS:
            self.counters["rejected"].labels(reason)
        for reason in DROP_REASONS:
            self.counters["dropped"].labels(reason)
        for result in ("allowed", "refused"):
            self.counters["preflights"].labels(result)
        for reason in CLIENT_FAILURE_REASONS:
            self.counters["client_failures"].labels(reason)
        for source in CONFIG_SOURCES:
            self.counters["client_config_refused"].labels(source)
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}
        if multiproc_dir is not None:
            self._scrape_registry = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self._scrape_registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
        else:
            self._scrape_registry = self.registry

    def observe_flush(self, events: int, seconds: float) -> None:
        """One flush (from the flusher thread; prometheus-client values are thread-safe)."""
        self.flush_size.observe(events)
        self.flush_seconds.observe(seconds)

    def observe_lookup(self, seconds: float) -> None:
        self.lookup_seconds.observe(seconds)

    def apply(self, snapshot: Snapshot) -> None:
        """Bring the metrics up to a snapshot: counters by what they grew since the last one, gauges set."""
        for key, value in snapshot.counters.items():
            self._advance(key, (), value)
        for key, by_labels in snapshot.labelled.items():
            for labels, value in by_labels.items():
                self._advance(key, labels, value)
        for key, value in snapshot.gauges.items():
            self.gauges[key].set(value)
        for key, by_labels in snapshot.labelled_gauges.items():
            for labels, value in by_labels.items():
                self.gauges[key].labels(*labels).set(value)

    def _advance(self, key: str, labels: tuple[str, ...], value: float) -> None:
        last = self._last.get((key, labels))
        if last is None:
            # A labelled series is exported from its first snapshot on, at 0 if need be: rate() and alerts then see
            # it before the first occurrence (a stats field is in every snapshot, 0 or not).
            if labels:
                self.counters[key].labels(*labels)
            last = self._last[(key, labels)] = 0.0
        if value > last:
            metric = self.counters[key]
            (metric.labels(*labels) if labels else metric).inc(value - last)
            self._last[(key, labels)] = value

    def render(self) -> bytes:
        """The exposition text of the whole service (every worker, in multiprocess mode)."""
        return generate_latest(self._scrape_registry)

    def forget_dead_workers(self) -> None:
        """Drop the live gauges of workers that died without cleaning up (SIGKILL, OOM): they no longer exist."""
        if self.multiproc_dir is None:
            return
        for path in self.multiproc_dir.glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            if not _alive(pid):
                mark_process_dead(pid, str(self.multiproc_dir))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """This worker is leaving: its live gauges go, its counters stay summed in (they are totals)."""
        if self.multiproc_dir is not None:
            mark_process_dead(os.getpid(), str(self.multiproc_dir))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetricsSync:
    """The one background task that syncs the plain counters into Prometheus metrics every second."""

    def __init__(self, metrics: Metrics, *, interval_s: float = SYNC_INTERVAL_S) -> None:
        self.metrics = metrics
        self._schedule = Periodic("Metrics sync", interval_s, self._tick)
        self._snapshot: Callable[[], Snapshot] | None = None
        self._ready: Callable[[], Awaitable[bool]] | None = None

    def sync(self) -> None:
        """Sync now (the scrape handler calls this so that this worker's figures are exact)."""
        if self._snapshot is not None:
            self.metrics.apply(self._snapshot())

    async def check_ready(self) -> None:
        if self._ready is not None:
            self.metrics.gauges["ready"].set(1 if await self._ready() else 0)

    async def start(self, snapshot: Callable[[], Snapshot], ready: Callable[[], Awaitable[bool]]) -> None:
        """Sync from `snapshot` every second, and from `ready` (which may ping PostgreSQL) every few seconds."""
        self._snapshot, self._ready = snapshot, ready
        self.metrics.forget_dead_workers()
        self.sync()
        await self.check_ready()
        self._schedule.start()

    async def close(self) -> None:
        """Stop the task, sync a last time (a scrape may still read this worker's counter files), and leave."""
        await self._schedule.close()
        try:
            self.metrics.gauges["ready"].set(0)
            self.sync()
        finally:
            self.metrics.close()

    async def _tick(self) -> None:
        """One round: sync, and every READY_EVERY_SYNCS rounds check readiness (a failure is logged by Periodic, and
        metrics never take the service down: the next round comes a second later)."""
        self.sync()
        if (self._schedule.rounds + 1) % READY_EVERY_SYNCS == 0:
            await self.check_ready()
