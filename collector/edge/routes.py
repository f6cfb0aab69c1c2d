"""The monitoring and admin routes (Starlette handlers); /collect itself is edge.collect.CollectEndpoint."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from collector.errors import (
    CollectorError,
    Forbidden,
    InvalidParameter,
    Unauthenticated,
    render,
)

if TYPE_CHECKING:
    from collector.services import Services

logger = logging.getLogger(__name__)

MAX_RECENT = 1000
# The classic text format, which every Prometheus 2.x and 3.x reads (what generate_latest writes for our names).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: CollectorError) -> Response:
    """A Starlette response of `exc`, rendered by errors.render like every other error answer."""
    return Response(render(exc), status_code=exc.status, headers=dict(exc.headers), media_type="application/json")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def services_of(scope: Scope) -> Services:
    services: Services = scope["app"].state.services
    return services


def require_admin(request: Request) -> None:
    """Bearer ADMIN_TOKEN when one is set; without one (development only) loopback clients alone."""
    token = services_of(request.scope).settings.admin_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Unauthenticated("admin endpoints need Authorization: Bearer <ADMIN_TOKEN>")
        return
    host = request.client.host if request.client else None
    try:
        loopback = host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise Forbidden("admin endpoints answer loopback clients only while ADMIN_TOKEN is unset")
    # A reverse proxy on the same machine connects from loopback on behalf of anyone: a forwarded request is
    # not a local operator, whatever its peer address.
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        raise Forbidden("admin endpoints without ADMIN_TOKEN answer direct loopback clients only, not proxied ones")


def is_admin(request: Request) -> bool:
    """Whether require_admin would let this request through."""
    try:
        require_admin(request)
    except CollectorError:
        return False
    return True


async def health(request: Request) -> JSONResponse:
    """The worker's whole state; in production only its status unless the admin token comes with the request
    (the detail tells an attacker which limits bite and how full the buffer is)."""
    services = services_of(request.scope)
    database_ok = await services.store.ping()
    if services.settings.environment == "production" and not is_admin(request):
        return JSONResponse(
            {"status": "healthy" if database_ok else "unhealthy", "detail": "send the admin token for the rest"},
            status_code=200 if database_ok else 503,
        )
    buffer = services.buffer
    body = {
        "status": "healthy" if database_ok else "unhealthy",
        "database": "connected" if database_ok else "unreachable",
        "timestamp": now_iso(),
        "ack_mode": services.settings.ack_mode,
        "buffer": {
            "depth": buffer.depth,
            "capacity": buffer.capacity,
            "bytes": buffer.bytes,
            "max_bytes": buffer.max_bytes,
            "accepting": buffer.accepting,
        },
        "flusher": {**vars_of(buffer.stats), "failing": buffer.failing, **vars_of(services.storage.stats)},
        "journal": {
            "bytes": services.storage.journal_bytes,
            **(vars_of(services.storage.journal.stats) if services.storage.journal is not None else {}),
        },
        "authorization": {"source": services.authorizer.directory.describe(), **vars_of(services.authorizer.stats)},
        "enrichment": {} if (e := services.enricher) is None else {**vars_of(e.stats), "bots": vars_of(e.bot_stats)},
        "events": accounting(services),
        "edge": {
            "preflights": dict(services.collect.preflights),
            "connections_refused": vars_of(services.edge.stats),
        },
        "worker_pid": os.getpid(),
    }
    return JSONResponse(body, status_code=200 if database_ok else 503)


def accounting(services: Services) -> dict[str, Any]:
    """This worker's event accounting. At quiescence received = accepted + rejected and
    accepted = stored + journaled + buffered + dropped (journaled rows stay counted there once replayed)."""
    ingest, storage, buffer = services.ingest, services.storage.stats, services.buffer
    rejected = dict(ingest.rejected)
    dropped = {"lost_on_close": buffer.stats.lost_on_close, "unstorable": storage.dropped_unstorable}
    if services.enricher is not None:  # bot events their client's policy drops (docs/enrichment.md)
        dropped["bot"] = services.enricher.bot_stats.dropped
    return {
        "received": ingest.accepted + sum(rejected.values()),
        "accepted": ingest.accepted,
        "rejected": rejected,
        "stored": storage.stored,
        "journaled": storage.journaled,
        "replayed": storage.replayed,
        "deduplicated": storage.deduplicated,
        "buffered": buffer.depth,
        "dropped": dropped,
    }


def vars_of(stats: Any) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in stats.__slots__}


async def livez(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive"})


async def not_ready_reasons(services: Services) -> list[str]:
    """Why this worker should get no traffic now (empty: ready); /readyz and the collector_ready gauge. Ingest
    (ROLE all or ingest) needs a buffer taking events and the database; the pipeline role only the database."""
    buffer = services.buffer
    reasons = []
    if services.settings.role == "pipeline":  # no /collect here: the database is all it needs to do its work
        return [] if await services.store.ping(timeout_s=1.0) else ["database_unreachable"]
    if not buffer.accepting:
        reasons.append("draining")
    if buffer.depth >= buffer.capacity:
        reasons.append("buffer_full")
    if not await services.store.ping(timeout_s=1.0):
        reasons.append("database_unreachable")
    return reasons


async def readyz(request: Request) -> JSONResponse:
    reasons = await not_ready_reasons(services_of(request.scope))
    if reasons:
        return JSONResponse({"status": "not_ready", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus text format: this worker synced now, the others as of their last sync (within a second)."""
    services = services_of(request.scope)
    if services.settings.environment == "production":
        require_admin(request)  # Prometheus sends it (authorization: credentials_file), strangers get 401
    services.metrics.sync()
    return Response(services.metrics.metrics.render(), media_type=METRICS_CONTENT_TYPE)


def _client_filter(request: Request) -> str | None:
    value = _text_param(request, "client_id")
    if value is not None and not (0 < len(value) <= 128):
        raise InvalidParameter("client_id must be 1 to 128 characters")
    return value


def _text_param(request: Request, name: str) -> str | None:
    """A text filter, refused (422) when PostgreSQL could not even compare it: NUL, or absurdly long."""
    value = request.query_params.get(name)
    if value is not None and ("\x00" in value or len(value) > 256):
        raise InvalidParameter(f"{name} must be at most 256 characters, without NUL")
    return value


async def events_count(request: Request) -> JSONResponse:
    """Stored events (from the per-client daily counts), and with client_id that client's figures per day."""
    require_admin(request)
    services = services_of(request.scope)
    client_id = _client_filter(request)
    total = await services.store.count(client_id)
    body: dict[str, Any] = {"total_events": total, "buffered_events": services.buffer.depth, "timestamp": now_iso()}
    if client_id is not None:
        body["client_id"] = client_id
        days: dict[str, dict[str, Any]] = {}
        for r in await services.store.client_counts(client_id, days=31):
            day = days.setdefault(r["day"].isoformat(), {"day": r["day"].isoformat(), "rejected": {}})
            metric: str = r["metric"]
            if metric.startswith("rejected:"):
                day["rejected"][metric.removeprefix("rejected:")] = r["count"]
            elif metric.startswith(("bot:", "dropped:bot:")):  # the enricher's (docs/enrichment.md)
                kind = "bots" if metric.startswith("bot:") else "bots_dropped"
                day.setdefault(kind, {})[metric.rsplit(":", 1)[1]] = r["count"]
            else:
                day[metric] = r["count"]
        for day in days.values():
            day["received"] = day.get("accepted", 0) + sum(day["rejected"].values())
            day["humans"] = day.get("stored", 0) - sum(day.setdefault("bots", {}).values())
        body["days"] = list(days.values())
        body["humans"] = sum(day["humans"] for day in days.values())
        body["bots"] = sum(sum(day["bots"].values()) for day in days.values())
    return JSONResponse(body)


async def dead_letters(request: Request) -> JSONResponse:
    """The newest rejected-event samples: why a site's events bounce."""
    require_admin(request)
    services = services_of(request.scope)
    records = await services.store.dead_letters(
        _limit(request),
        reason=_text_param(request, "reason"),
        client_id=_client_filter(request),
        domain=_text_param(request, "domain"),
    )
    return JSONResponse(
        [
            {
                "id": r["id"], "received_at": r["received_at"].isoformat(), "reason": r["reason"],
                "client_id": r["client_id"], "domain": r["domain"], "detail": r["detail"], "payload": r["payload"],
            }
            for r in records
        ]
    )  # fmt: skip


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "10")
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidParameter("limit must be a whole number") from None
    if limit < 1:
        raise InvalidParameter("limit must be at least 1")
    return min(limit, MAX_RECENT)


async def events_recent(request: Request) -> JSONResponse:
    """The newest stored events. One naming rule: what the client sent reads back under the name it was sent
    with (eventType, eventData, sessionId, url, ...), what the server added in the seed's snake_case (client_id,
    created_at), so the seed's `jq '.[] | {eventType, client_id, created_at}'` keeps working."""
    require_admin(request)
    services = services_of(request.scope)
    records = await services.store.recent(_limit(request), _client_filter(request))
    return JSONResponse(
        [
            {
                "eventId": str(r["event_id"]),
                "eventType": r["event_type"],
                "eventData": r["event_data"],
                "sessionId": r["session_id"],
                "visitorId": r["visitor_id"],
                "siteId": r["site_id"],
                "url": r["url"],
                "path": r["path"],
                "referrer": r["referrer"],
                "timestamp": r["event_timestamp"].isoformat(),
                "client_id": r["client_id"],
                "created_at": r["received_at"].isoformat(),
            }
            for r in records
        ]
    )
