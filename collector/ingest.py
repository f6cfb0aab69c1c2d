"""Ingest: one /collect request from body bytes to buffered rows — parse, authorize, attribute, enqueue."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from collector.accounting import Accounting
from collector.auth import DomainAuthorizer
from collector.buffer import WriteBehindBuffer
from collector.errors import CollectorError, InvalidEvent
from collector.events import EventParser, RequestContext, parse_body
from collector.proxies import client_ip
from collector.settings import Settings


class Ingest:
    """The /collect use case, free of HTTP framing so that every front door (POST, beacon, pixel) shares it."""

    def __init__(
        self, settings: Settings, authorizer: DomainAuthorizer, buffer: WriteBehindBuffer, accounting: Accounting
    ) -> None:
        self.parser = EventParser(
            max_events_per_request=settings.max_events_per_request, max_event_bytes=settings.max_event_bytes
        )
        self.authorizer = authorizer
        self.buffer = buffer
        self.accounting = accounting
        self.durable = settings.ack_mode == "durable"
        self._trusted = settings.trusted_proxies
        self.max_body_bytes = settings.max_body_bytes
        self._verb = "stored" if self.durable else "queued"
        self._last_millis = (0, "")
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    async def collect(
        self, body: bytes, *, peer: str | None, forwarded_for: str | None, user_agent: str | None
    ) -> dict[str, Any]:
        """Store (or queue) the valid events of one request; the success body, or a CollectorError."""
        domain = None
        try:
            payload = parse_body(body)
            events = self.parser.events_of(payload)
            domain = self.parser.domain_of(payload, events)
            site = await self.authorizer.authorize(domain)
        except CollectorError as exc:
            self.rejected[exc.error] += 1
            if exc.status < 500:  # the sender's mistake: keep a sample so the site owner can see why
                self.accounting.reject(exc.error, None, domain, exc.detail, body)
            raise
        ip, ip_hash = site.ip_columns(client_ip(peer, forwarded_for, self._trusted))
        ctx = RequestContext.build(domain, site.client_id, user_agent, ip, ip_hash)
        rows, rejections = self.parser.rows(payload, events, ctx)
        rejected = [{"index": r.index, "error": r.error} for r in rejections]
        if rejected:
            self.rejected["invalid_event"] += len(rejected)
            for r in rejections:
                self.accounting.reject("invalid_event", site.client_id, domain, r.error, events[r.index])
        if not rows:
            raise InvalidEvent(
                "no event in the request is valid" if len(rejections) > 1 else rejections[0].error,
                extra={"events_rejected": rejected},
            )
        try:
            if self.durable:
                stored = self.buffer.put_waiting(rows, site.client_id)
            else:
                self.buffer.put(rows, site.client_id)
        except CollectorError as exc:
            self.rejected[exc.error] += len(rows)
            self.accounting.count(site.client_id, f"rejected:{exc.error}", len(rows))
            raise
        self.accepted += len(rows)
        self.accounting.count(site.client_id, "accepted", len(rows))
        if self.durable:
            await stored  # a failure here was counted by the buffer as lost, and answers 503
        response: dict[str, Any] = {
            "status": "success",
            "message": f"{len(rows)} event(s) received and {self._verb}",
            "events_processed": len(rows),
            "client_id": site.client_id,
            "timestamp": self._iso_millis(ctx.received_ns),
        }
        if rejected:
            response["events_rejected"] = rejected
        return response

    def _iso_millis(self, unix_ns: int) -> str:
        """The receive time as the response's ISO 8601 string; formatted once per millisecond, not per request."""
        millis = unix_ns // 1_000_000
        last, text = self._last_millis
        if millis != last:
            text = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            self._last_millis = (millis, text)
        return text
