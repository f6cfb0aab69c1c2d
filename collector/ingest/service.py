"""Ingest: one /collect request from body bytes to buffered rows — parse, authorize, attribute, enqueue."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, NoReturn

from collector.errors import (
    CollectorError,
    InvalidEvent,
    OriginMismatch,
    RateLimited,
    RequestRowsTooLarge,
    WriteKeyMismatch,
)
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.consent import UNKNOWN, cookieless_id, scrub
from collector.ingest.consent import state_of as consent_state
from collector.ingest.events import EventParser, Rejection, RequestContext
from collector.ingest.origins import within
from collector.ingest.payload import parse_body
from collector.ingest.proxies import Signals, client_ip, read_signals
from collector.ingest.ratelimit import address_key, limiter
from collector.ingest.sites import SiteConfig
from collector.settings import Settings
from collector.storage.accounting import Accounting
from collector.storage.buffer import WriteBehindBuffer
from collector.storage.salts import VisitorSalts

# What one request's events came to: how many were accepted, for which client, when (Unix ns), and the
# {"index", "error"} of each invalid one. A plain tuple: a NamedTuple cost 190 ns more per request.
Accepted = tuple[int, str, int, list[dict[str, Any]]]


class Ingest:
    """The /collect use case, free of HTTP framing and CORS so that every front door (POST, beacon, pixel) shares it:
    bytes or a payload in, an Accepted result (or a counted CollectorError) out."""

    def __init__(
        self,
        settings: Settings,
        authorizer: DomainAuthorizer,
        buffer: WriteBehindBuffer,
        accounting: Accounting,
        salts: VisitorSalts | None = None,
    ) -> None:
        self.parser = EventParser(
            max_events_per_request=settings.max_events_per_request,
            max_event_bytes=settings.max_event_bytes,
            max_event_data_keys=settings.max_event_data_keys,
            max_inherited_bytes=settings.max_inherited_bytes,
        )
        self.max_request_row_bytes = settings.max_request_row_bytes
        self.authorizer = authorizer
        self.buffer = buffer
        self.accounting = accounting
        self.salts = salts  # the daily salts of cookieless visitor ids (None: no ids are derived)
        self.durable = settings.ack_mode == "durable"
        self._trusted = settings.trusted_proxies
        self.ip_limiter = limiter(settings.rate_limit_ip_per_s, settings.rate_limit_ip_burst)
        self.site_limiter = limiter(settings.rate_limit_site_per_s, settings.rate_limit_site_burst)
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    async def collect(
        self,
        body: bytes,
        *,
        peer: str | None,
        forwarded_for: str | None,
        user_agent: str | None,
        origin: str | None = None,
        signals: Signals | None = None,
    ) -> Accepted:
        """Store (or queue) the valid events of one request and say what was accepted; or raise a CollectorError.

        `origin` is the normalized host of the request's Origin (else Referer) header, "" when that header is
        unusable, None when there is neither (a server-side sender, judged by siteId alone). `signals`: the
        request's SIGNAL_HEADERS (Sec-GPC, a CDN's country), if it had any.
        """
        ip = self._admit(peer, forwarded_for)
        try:
            payload = parse_body(body)
        except CollectorError as exc:
            self.refused(exc, body)
            raise
        if signals is None:
            return await self._ingest(payload, body, ip, user_agent, origin)
        return await self._ingest(payload, body, ip, user_agent, origin, read_signals(signals, peer, self._trusted))

    async def collect_payload(
        self,
        payload: dict[str, Any],
        sample: Any,
        *,
        peer: str | None,
        forwarded_for: str | None,
        user_agent: str | None,
        origin: str | None = None,
        client_id: str | None = None,
        event_ip: str | None = None,
        signals: Signals | None = None,
    ) -> Accepted:
        """collect() for a payload already built (the GET pixel's query, a protocol's mapped events); `sample` goes
        to dead letters. A front door with write keys names the key's `client_id`, which the site's must be; one
        whose messages name their user's address passes it as `event_ip` (stored under the site's IP rule; the
        rate limit still keys on the sender's)."""
        ip = self._admit(peer, forwarded_for)
        hints = (False, None) if signals is None else read_signals(signals, peer, self._trusted)
        return await self._ingest(payload, sample, event_ip or ip, user_agent, origin, hints, client_id)

    async def collect_rows(
        self,
        domain: str,
        rows_of: Callable[[RequestContext], list[bytes]],
        payload_of: Callable[[], dict[str, Any]],
        sample: list[Any],
        *,
        peer: str | None,
        forwarded_for: str | None,
        user_agent: str | None,
        origin: str | None = None,
        client_id: str | None = None,
        event_ip: str | None = None,
    ) -> Accepted:
        """collect_payload() for a front door's group of events of one site whose COPY rows its mapping encodes
        itself (collector.ingest.mapping.rows): `rows_of` makes them once the request's columns are known; `sample`
        holds the group's messages (their count, and dead letters); `payload_of` builds the group's /collect payload
        for what only that path does (a consent policy that scrubs or derives ids). Everything else is /collect's."""
        ip = self._admit(peer, forwarded_for)
        return await self._ingest_rows(domain, rows_of, payload_of, sample, event_ip or ip, user_agent, origin,
                                       client_id)  # fmt: skip

    def refused(self, exc: CollectorError, sample: Any) -> None:
        """Count a request refused before its events were known (and keep a sample of the sender's mistakes)."""
        self.rejected[exc.error] += 1
        if exc.status < 500 and exc.status != 429:
            self.accounting.reject(exc.error, None, None, exc.detail, sample)

    def _admit(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client address, once its rate limit lets the request through (else RateLimited, counted)."""
        ip = client_ip(peer, forwarded_for, self._trusted)
        if self.ip_limiter is not None and ip is not None and (wait := self.ip_limiter.take(address_key(ip))):
            self.rejected["rate_limited"] += 1
            raise RateLimited(f"too many requests from this address; retry in {wait} s", retry_after_s=wait)
        return ip

    async def _ingest(
        self,
        payload: dict[str, Any],
        sample: Any,
        ip: str | None,
        user_agent: str | None,
        origin: str | None,
        hints: tuple[bool, str | None] = (False, None),  # (Sec-GPC asked, a trusted CDN's country)
        client_id: str | None = None,
    ) -> Accepted:
        domain = None
        try:
            events = self.parser.events_of(payload)
            domain = self.parser.domain_of(payload, events)
            state = consent_state(payload, hints[0]) if hints[0] or "consent" in payload else UNKNOWN
            site = await self.authorizer.authorize(domain)
            if client_id is not None and site.client_id != client_id:
                raise _key_mismatch(domain)
        except CollectorError as exc:
            self._unauthorized(exc, domain, sample)
            raise
        if origin is not None or self.site_limiter is not None:
            self._check_sender(origin, domain, site.client_id, len(events), sample)
        ctx = self._context(site, state, payload, events, domain, ip, user_agent)
        try:
            rows, rejections = self.parser.rows(payload, events, ctx)
        except CollectorError as exc:  # JSON nested too deep or a wrapper too big, found only while encoding
            self.rejected[exc.error] += 1
            self.accounting.reject(exc.error, site.client_id, domain, exc.detail, sample)
            raise
        if (size := sum(map(len, rows))) > self.max_request_row_bytes:
            self._too_large(size, len(rows), len(events), site.client_id, domain, sample)
        rejected = self._count_rejections(rejections, events, site.client_id, domain) if rejections else []
        if not rows:
            raise InvalidEvent(
                "no event in the request is valid" if len(rejections) > 1 else rejections[0].error,
                extra={"events_rejected": rejected},
            )
        # What storage's enricher needs (collector.enrich.policy.EnrichRequest); the address is looked up, never stored.
        enrich = (site.enrich, ctx.user_agent, ip, hints[1], payload.get("webdriver") is True)
        try:
            if self.durable:
                stored = self.buffer.put_waiting(rows, site.client_id, size, enrich)
            else:
                self.buffer.put(rows, site.client_id, size, enrich)  # counted once, for the per-request bound above
        except CollectorError as exc:
            self._unqueued(exc, site.client_id, len(rows))
            raise
        self.accepted += len(rows)
        self.accounting.count(site.client_id, "accepted", len(rows))
        if self.durable:
            await stored  # a failure here was counted by the buffer as lost, and answers 503
        return len(rows), site.client_id, ctx.received_ns, rejected

    async def _ingest_rows(
        self,
        domain: str,
        rows_of: Callable[[RequestContext], list[bytes]],
        payload_of: Callable[[], dict[str, Any]],
        sample: list[Any],
        ip: str | None,
        user_agent: str | None,
        origin: str | None,
        client_id: str | None,
    ) -> Accepted:
        """_ingest for rows a front door's mapping encoded itself: the same steps in the same order, with the parsing
        and validation left out (the mapping encoded only events /collect would certainly take, so none is
        refused here). The happy path's last steps are repeated rather than shared: one more call on /collect's
        path cost 1.5 % of its instructions (deploy/bench/micro_collect.py under callgrind)."""
        try:
            site = await self.authorizer.authorize(domain)
            if client_id is not None and site.client_id != client_id:
                raise _key_mismatch(domain)
        except CollectorError as exc:
            self._unauthorized(exc, domain, sample)
            raise
        if not site.consent.plain:  # consent may scrub or derive ids: the /collect path does that on its dicts
            return await self._ingest(payload_of(), sample, ip, user_agent, origin, (False, None), client_id)
        n = len(sample)
        if origin is not None or self.site_limiter is not None:
            self._check_sender(origin, domain, site.client_id, n, sample)
        ctx = self._context(site, UNKNOWN, {}, sample, domain, ip, user_agent)
        rows = rows_of(ctx)
        if (size := sum(map(len, rows))) > self.max_request_row_bytes:
            self._too_large(size, n, n, site.client_id, domain, sample)
        enrich = (site.enrich, ctx.user_agent, ip, None, False)  # as _ingest's: no CDN country, no webdriver flag
        try:
            if self.durable:
                stored = self.buffer.put_waiting(rows, site.client_id, size, enrich)
            else:
                self.buffer.put(rows, site.client_id, size, enrich)
        except CollectorError as exc:
            self._unqueued(exc, site.client_id, n)
            raise
        self.accepted += n
        self.accounting.count(site.client_id, "accepted", n)
        if self.durable:
            await stored
        return n, site.client_id, ctx.received_ns, []

    def _unauthorized(self, exc: CollectorError, domain: str | None, sample: Any) -> None:
        """Count a request refused before its rows were made (unreadable, unauthorized, another client's key)."""
        self.rejected[exc.error] += 1
        if exc.status < 500:  # the sender's mistake: keep a sample so the site owner can see why
            self.accounting.reject(exc.error, None, domain, exc.detail, sample)

    def _unqueued(self, exc: CollectorError, client_id: str, n: int) -> None:
        """Count rows the buffer could not take (full, or shutting down)."""
        self.rejected[exc.error] += n
        self.accounting.count(client_id, f"rejected:{exc.error}", n)

    def _too_large(self, size: int, rows: int, events: int, client_id: str, domain: str, sample: Any) -> NoReturn:
        """Refuse (and count) a request whose rows would take more than MAX_REQUEST_ROW_BYTES of storage."""
        too_large = RequestRowsTooLarge(
            f"the request's {rows} event(s) would add {size} bytes to storage;"
            f" at most {self.max_request_row_bytes} are accepted per request"
        )
        self.rejected[too_large.error] += events
        self.accounting.reject(too_large.error, client_id, domain, too_large.detail, sample, n=events)
        raise too_large

    def _context(
        self,
        site: SiteConfig,
        state: str,
        payload: dict[str, Any],
        events: list[Any],
        domain: str,
        ip: str | None,
        user_agent: str | None,
    ) -> RequestContext:
        """The request's encoded columns, after removing what its consent state does not allow (and deriving a
        cookieless visitor id where the client asks for one): the address is stored only with consent."""
        policy = site.consent
        if state != UNKNOWN or not policy.plain:
            allowed = policy.allows(state)
            if derive := policy.derives(allowed):
                salt = self.salts.today() if self.salts is not None else None
                visitor = cookieless_id(salt, domain, ip, user_agent) if salt is not None and ip is not None else None
            if not allowed or derive:
                scrub(payload, events, keep_session=allowed, visitor=visitor if derive else None)
            if not allowed:
                ip = None
        ip_column, ip_hash = site.ip_columns(ip)
        return RequestContext.build(domain, site.client_id, user_agent, ip_column, ip_hash, state)

    def _count_rejections(
        self, rejections: list[Rejection], events: list[Any], client_id: str, domain: str
    ) -> list[dict[str, Any]]:
        """Count and sample the request's invalid events; their list as the response shows it."""
        for r in rejections:
            self.rejected[r.code] += 1
            self.accounting.reject(r.code, client_id, domain, r.error, events[r.index])
        return [{"index": r.index, "error": r.error} for r in rejections]

    def _check_sender(self, origin: str | None, domain: str, client_id: str, n: int, sample: Any) -> None:
        """Refuse (and count) the request's `n` events if its page is not on the site, or the site is over its rate."""
        if origin is not None and not within(origin, domain):
            mismatch = OriginMismatch(f"events of {domain} are not accepted from a page on {origin or 'no site'}")
            self.rejected[mismatch.error] += n
            self.accounting.reject(mismatch.error, client_id, domain, mismatch.detail, sample, n=n)
            raise mismatch
        if self.site_limiter is not None and (wait := self.site_limiter.take(domain)):
            self.rejected["rate_limited"] += n
            self.accounting.count(client_id, "rejected:rate_limited", n)
            raise RateLimited(f"too many requests for {domain}; retry in {wait} s", retry_after_s=wait)


def _key_mismatch(domain: str) -> WriteKeyMismatch:
    return WriteKeyMismatch(f"the write key is not one of the client that {domain} belongs to")
