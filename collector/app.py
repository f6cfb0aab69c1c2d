"""create_app(settings): routes, error handlers and the one lifespan that owns every long-lived object."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from collector import __version__
from collector.edge import openapi, routes
from collector.edge.collect import CollectEndpoint
from collector.edge.protocol import EDGE_STATE, Edge
from collector.edge.protocols import door_paths, open_doors
from collector.edge.tracker import TrackerScript
from collector.enrich.enricher import Enricher
from collector.enrich.geo import GeoLookup
from collector.errors import CollectorError, HttpError, InternalError
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.directories import make_directory
from collector.ingest.service import Ingest
from collector.ops.metrics import Metrics, MetricsSync
from collector.ops.metricsdir import multiprocess_dir
from collector.ops.snapshot import RequestCounts, snapshot_of
from collector.services import Services
from collector.settings import Settings, redact_url
from collector.storage.accounting import Accounting
from collector.storage.buffer import WriteBehindBuffer
from collector.storage.database import EventStore
from collector.storage.partitions import PartitionMaintainer
from collector.storage.salts import VisitorSalts
from collector.storage.spill import Storage
from pipeline.samples import redact_sample

logger = logging.getLogger(__name__)


def _logged(name: str, close: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await close()
        except Exception:  # cleanup carries on with the rest
            logger.exception("Closing %s failed", name)

    return run


async def open_services(
    settings: Settings, database_url: str, requests: RequestCounts, stack: AsyncExitStack
) -> Services:
    """Open every long-lived object in order, each one's close pushed on `stack` (which unwinds in reverse)."""
    # WORKERS>1: every worker writes its values under DATA_DIR/metrics (see collector.ops.metrics).
    metrics = Metrics(multiproc_dir=multiprocess_dir(settings.data_dir) if settings.workers > 1 else None)
    store = await EventStore.open(
        database_url, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
        durable=settings.ack_mode == "durable",
    )  # fmt: skip
    stack.push_async_callback(_logged("database pool", store.close))
    # Closed after the buffer and the rest (before the pool): its last sync counts the final flushes.
    metrics_sync = MetricsSync(metrics)
    stack.push_async_callback(_logged("metrics", metrics_sync.close))
    partitions = PartitionMaintainer(store)
    partitions.start()
    stack.push_async_callback(_logged("partition maintainer", partitions.close))
    authorizer = _authorizer(settings, metrics)
    stack.push_async_callback(_logged("authorizer", authorizer.close))
    # Built in every role (the routes and the snapshot read them); started only where /collect is served.
    accounting = Accounting(store.pool, redact=redact_sample)
    storage, buffer, enricher = _storage_and_buffer(settings, store, metrics, accounting, stack)
    if settings.role != "pipeline":
        await storage.start()
        await buffer.start()
        stack.push_async_callback(_logged("buffer", lambda: _close_buffer(buffer, storage, settings.buffer_drain_s)))
        accounting.start()
        stack.push_async_callback(_logged("accounting", accounting.close))
    ingest = Ingest(settings, authorizer, buffer, accounting, await _salts(settings, store, stack))
    pipeline = None
    if settings.role != "ingest":
        # Imported here: an ingest-only worker never loads the stages (aioboto3 and botocore alone cost ~10 MB).
        from pipeline.scheduler import open_pipeline

        pipeline = await open_pipeline(settings, database_url, authorizer.directory, stack)
        pipeline.start(store.pool)
        stack.push_async_callback(_logged("pipeline", pipeline.close))
    collect = CollectEndpoint(settings, ingest, authorizer)
    services = Services(
        settings, store, authorizer, buffer, storage, accounting, ingest, metrics_sync, pipeline,
        Edge.from_settings(settings), collect, open_doors(settings, ingest, authorizer), enricher,
    )  # fmt: skip

    async def ready() -> bool:
        return not await routes.not_ready_reasons(services)

    await metrics_sync.start(lambda: snapshot_of(services, requests), ready)
    # Everything allocated so far lives as long as the process: out of the collector's sight, a full collection no
    # longer walks it (a pause that showed in the tail latency).
    gc.collect()
    gc.freeze()
    logger.info(
        "Collector ready: role=%s ack_mode=%s flush=%d events/%d ms buffer=%d database=%s authorization=%s"
        " raw=%s processed=%s",
        settings.role, settings.ack_mode, settings.flush_max_events, settings.flush_interval_ms,
        settings.buffer_max_events, redact_url(database_url), authorizer.directory.describe(),
        "-" if pipeline is None else pipeline.exporter.objects.name,
        "-" if pipeline is None else pipeline.processor.default_store_name,
    )  # fmt: skip
    return services


def _authorizer(settings: Settings, metrics: Metrics) -> DomainAuthorizer:
    return DomainAuthorizer(
        make_directory(settings),
        ip_hash_secret=settings.hash_secret,
        ttl_s=settings.auth_cache_ttl_s,
        negative_ttl_s=settings.auth_negative_ttl_s,
        stale_max_s=settings.auth_stale_max_s,
        max_entries=settings.auth_cache_size,
        on_lookup=metrics.observe_lookup,
    )


async def _salts(settings: Settings, store: EventStore, stack: AsyncExitStack) -> VisitorSalts:
    """The daily salts of cookieless visitor ids, kept current where /collect is served."""
    salts = VisitorSalts(store.pool)
    if settings.role != "pipeline":
        await salts.start()
        stack.push_async_callback(_logged("visitor salts", salts.close))
    return salts


def _enricher(settings: Settings, accounting: Accounting, stack: AsyncExitStack) -> Enricher:
    """The enricher storage's thread runs; its per-batch bot counts go to the accounting on this (the request) loop."""
    loop = asyncio.get_running_loop()

    def counted(counts: Counter[tuple[str, str]]) -> None:
        try:
            loop.call_soon_threadsafe(accounting.add_counts, counts)
        except RuntimeError:  # the request loop has closed (a stop that outlived it): counts, not rows, are lost
            logger.warning("Bot counts of a batch enriched after the request loop closed were not recorded: %s", counts)

    geo = None
    if settings.geoip_database is not None:
        geo = GeoLookup(Path(settings.geoip_database))
        stack.callback(geo.close)
    return Enricher(geo, counted)


def _storage_and_buffer(
    settings: Settings, store: EventStore, metrics: Metrics, accounting: Accounting, stack: AsyncExitStack
) -> tuple[Storage, WriteBehindBuffer, Enricher | None]:
    enricher = _enricher(settings, accounting, stack) if settings.role != "pipeline" else None
    storage = Storage(
        [store.copy_writer(timeout_s=settings.copy_timeout_s) for _ in range(settings.flush_concurrency)],
        Path(settings.data_dir) / "journal",
        journal_max_bytes=settings.journal_max_bytes,
        journal_segment_bytes=settings.journal_segment_bytes,
        retry_initial_s=0.05,
        retry_max_s=5.0,
        enrich=None if enricher is None else enricher.apply,
    )
    # Storage runs on its own thread; the buffer hands it batches and, through `flow`, when to spill them.
    buffer = WriteBehindBuffer(
        storage,
        max_events=settings.buffer_max_events,
        max_bytes=settings.buffer_max_bytes,
        flush_max_events=settings.flush_max_events,
        flush_interval_s=settings.flush_interval_s,
        drain_timeout_s=settings.buffer_drain_s,
        on_flush=metrics.observe_flush,
        flow=storage.flow,
        concurrency=settings.flush_concurrency,
    )
    return storage, buffer, enricher


async def _close_buffer(buffer: WriteBehindBuffer, storage: Storage, drain_s: float) -> None:
    """One BUFFER_DRAIN_S for both: the buffer's queue first, then what is left of it for the journal's replay."""
    started = time.monotonic()
    try:
        await buffer.close()
    finally:
        await storage.close(replay_s=drain_s - (time.monotonic() - started))


def create_app(settings: Settings) -> CollectorApp:
    """The collector as an ASGI app; nothing connects until its lifespan starts."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url (the embedded database is started by __main__)")
    database_url = settings.database_url
    requests = RequestCounts()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            services = app.state.services = await open_services(settings, database_url, requests, stack)
            # uvicorn hands the lifespan state to each connection's protocol: that is how it finds its limits.
            yield {EDGE_STATE: services.edge}

    document = openapi.document(settings)

    async def openapi_json(request: Request) -> Response:
        # Introspection is for operators in production: there it needs the admin token like /events/recent.
        if settings.environment == "production":
            routes.require_admin(request)
        return routes.JSONResponse(document)

    # Load balancers probe `/` by default, and the seed answered there: a 200 that says what this is and where to go.
    index = {
        "service": "collection-api",
        "version": __version__,
        "links": {
            "collect": "/collect", "collect_alias": settings.collect_alias_path, "tracker": settings.tracker_path,
            "health": "/health", "livez": "/livez", "readyz": "/readyz", "metrics": "/metrics",
            "openapi": "/openapi.json",
        },
    }  # fmt: skip

    async def root(request: Request) -> Response:
        return routes.JSONResponse(index)

    app = Starlette(
        routes=[
            Route("/", root),
            Route("/openapi.json", openapi_json),
            Route(settings.tracker_path, TrackerScript(settings.collect_alias_path).serve),
            Route("/health", routes.health),
            Route("/livez", routes.livez),
            Route("/readyz", routes.readyz),
            Route("/metrics", routes.metrics),
            Route("/events/count", routes.events_count),
            Route("/events/recent", routes.events_recent),
            Route("/dead-letters", routes.dead_letters),
            *_role_routes(settings),
        ],
        exception_handlers={CollectorError: _collector_error, HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    serves = settings.role != "pipeline"
    return CollectorApp(
        app, requests, settings.collect_alias_path, serve_collect=serves and "collect" in settings.protocols,
        doors=door_paths(settings) if serves else frozenset(),
    )  # fmt: skip


def _role_routes(settings: Settings) -> list[Route]:
    """The pipeline's admin routes where it runs; where it does not, /collect's paths answer a 404 that says why."""
    if settings.role == "ingest":
        return []
    if settings.role == "pipeline":

        async def not_here(request: Request) -> Response:
            raise HttpError(
                404, "not_found", "this instance runs ROLE=pipeline: send events to one with ROLE=ingest or all"
            )

        methods = ["GET", "POST", "OPTIONS"]
        extra = [
            Route("/collect", not_here, methods=methods),
            Route(settings.collect_alias_path, not_here, methods=methods),
        ]
    else:
        extra = []
    # Imported here: an ingest-only worker never loads the pipeline's stages.
    from collector.edge import pipeline_admin

    return [*pipeline_admin.ROUTES, *extra]


class CollectorApp:
    """The ASGI entry: /collect (and its alias) goes straight to its handler, the rest (and lifespan) to Starlette.

    Starlette's middleware stack and router cost about as much per request as our whole ingest work; the
    hot path does its own error handling (edge.collect.CollectEndpoint), so it needs neither.
    """

    def __init__(
        self,
        starlette: Starlette,
        requests: RequestCounts,
        alias_path: str = "/e",
        *,
        serve_collect: bool = True,
        doors: frozenset[str] = frozenset(),
    ) -> None:
        self.starlette = starlette
        self._doors = doors  # the other protocols' paths (PROTOCOLS), answered by services.doors
        self._serve_collect = serve_collect
        self.requests = requests
        self._alias = alias_path
        self._routes = frozenset(route.path for route in starlette.routes if isinstance(route, Route))
        self._collect: CollectEndpoint | None = None

    @property
    def services(self) -> Services:
        """The running app's long-lived objects (only while its lifespan runs)."""
        services: Services = self.starlette.state.services
        return services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and (scope["path"] == "/collect" or scope["path"] == self._alias)
            and self._serve_collect
        ):
            collect = self._collect
            if collect is None:
                collect = self._collect = self.services.collect
            self.requests.collect[await collect(scope, receive, send)] += 1
            return
        if scope["type"] == "http" and scope["path"] in self._doors:
            path = scope["path"]
            self.requests.other[(path, await self.services.doors[path](scope, receive, send))] += 1
            return
        if scope["type"] == "lifespan":
            self._collect = None
            await self.starlette(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other route, counted by route and status; unknown paths share one label (cardinality stays low)."""
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.starlette(scope, receive, send_status)
        finally:
            if scope["type"] == "http":
                route = scope["path"] if scope["path"] in self._routes else "other"
                self.requests.other[(route, status or 500)] += 1


async def _collector_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CollectorError)
    return routes.error_response(exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback; the client learns nothing of it.
    return routes.error_response(InternalError("internal error"))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return routes.error_response(HttpError(exc.status_code, code, exc.detail, headers=exc.headers))
