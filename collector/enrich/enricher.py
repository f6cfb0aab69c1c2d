"""Enricher: fills the enrichment columns of a batch's rows on storage's thread, once per request, before COPY.

Why there and not on the request loop: parsing a user agent costs ~17 µs and a bot verdict 1-3 µs uncached, work the
request that brought the event need not wait for; and not in processing, because geography needs the full address,
which ingest hashes or drops before the row is encoded. Ingest hands each request's raw user agent and address to
the buffer beside its rows (an EnrichRequest, never stored); each row holds a fixed run of NULLs
(copyformat.ENRICH_NULLS) just before its last field, received_at, that is replaced here, before the batch is
committed or journaled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from cachetools import LRUCache

from collector.enrich.agents import Agent, UserAgents
from collector.enrich.bots import AUTOMATION, IP_EXCLUDED, BotClassifier
from collector.enrich.geo import NOWHERE, GeoLookup, Place
from collector.enrich.policy import EnrichRequest
from collector.storage import copyformat
from collector.storage.batch import Batch

_NULLS = copyformat.ENRICH_NULLS
_END = copyformat.RECEIVED_BYTES  # received_at: the fixed 12 bytes after the NULLs
_CUT = -len(_NULLS) - _END
# Bounded caches (keys are at most 512 + 45 characters): ~8,192 x 1.5 KB = 12 MB, 16,384 x 0.3 KB = 5 MB.
AGENT_CACHE = 8192
PLACE_CACHE = 16384

# Once per batch, the rows per (client_id, metric): `bot:<reason>` for flagged bot rows, `dropped:bot:<reason>` for
# rows a client's `bots: drop` left out (the accounting's metric names; docs/enrichment.md).
OnCount = Callable[[Counter[tuple[str, str]]], None]


@dataclass(slots=True)
class EnricherStats:
    requests: int = 0  # requests enriched
    agent_misses: int = 0  # user agents parsed (not found in the cache)
    place_misses: int = 0


@dataclass(slots=True)
class BotStats:
    """Bot events by what their client's `features.bots` did with them (flagged and stored, or dropped) and why they
    are bots (bots.REASONS); per client, the accounting has the same as `bot:<reason>` and `dropped:bot:<reason>`."""

    flagged_crawler: int = 0
    flagged_headless: int = 0
    flagged_automation: int = 0
    flagged_library: int = 0
    flagged_no_user_agent: int = 0
    flagged_ip_excluded: int = 0
    dropped_crawler: int = 0
    dropped_headless: int = 0
    dropped_automation: int = 0
    dropped_library: int = 0
    dropped_no_user_agent: int = 0
    dropped_ip_excluded: int = 0

    def add(self, action: str, reason: str, n: int) -> None:
        name = f"{action}_{reason}"
        setattr(self, name, getattr(self, name) + n)

    @property
    def dropped(self) -> int:
        return sum(getattr(self, name) for name in self.__slots__ if name.startswith("dropped_"))


class Enricher:
    """Owned by storage and used only on its thread (its caches have no lock)."""

    def __init__(self, geo: GeoLookup | None = None, on_count: OnCount | None = None) -> None:
        self.bots = BotClassifier()
        self.agents = UserAgents()
        self.geo = geo
        self._on_count = on_count
        self._by_agent: LRUCache[tuple[str | None, str], tuple[str | None, bytes]] = LRUCache(AGENT_CACHE)
        self._by_address: LRUCache[tuple[str | None, str | None, str], bytes] = LRUCache(PLACE_CACHE)
        self.stats = EnricherStats()
        self.bot_stats = BotStats()

    def apply(self, batch: Batch) -> Batch:
        """The batch with each request's rows enriched, or left out (and counted) when their client drops bots."""
        if not batch.requests:
            return batch
        rows, out = batch.rows, list[bytes]()
        clients = dict(batch.clients)
        counts: Counter[tuple[str, str]] = Counter()
        position = 0
        for n, request in batch.requests:
            part = rows[position : position + n]
            position += n
            if request is None:
                out.extend(part)
                continue
            reason, fields = self.fields(request)
            if reason is not None:
                client = request[0].client_id
                if request[0].drop_bots:
                    counts[(client, f"dropped:bot:{reason}")] += n
                    self.bot_stats.add("dropped", reason, n)
                    clients[client] = clients.get(client, n) - n
                    continue
                counts[(client, f"bot:{reason}")] += n
                self.bot_stats.add("flagged", reason, n)
            if n > 1:
                out.extend(_spliced(part, fields))
            else:
                out.extend([row[:_CUT] + fields + row[-_END:] if row.startswith(_NULLS, _CUT) else row for row in part])
        out.extend(rows[position:])
        if counts and self._on_count is not None:
            self._on_count(counts)
        return replace(batch, rows=out, clients={c: k for c, k in clients.items() if k > 0}, requests=())

    def fields(self, request: EnrichRequest) -> tuple[str | None, bytes]:
        """The bot reason (None for a person) and the encoded enrichment columns of one request's rows."""
        policy, user_agent, ip, cdn_country, automation = request
        self.stats.requests += 1
        level = policy.privacy_level
        reason, agent_fields = self._agent(user_agent, level)
        if policy.ip_exclusions and policy.excludes(ip):
            reason = IP_EXCLUDED
        elif automation and reason is None:
            reason = AUTOMATION
        bot = copyformat.boolean(reason is not None) + copyformat.cached_text(reason)
        return reason, bot + agent_fields + self._place(ip, cdn_country, level)

    def _agent(self, user_agent: str | None, level: str) -> tuple[str | None, bytes]:
        key = (user_agent, level)
        found = self._by_agent.get(key)
        if found is None:
            self.stats.agent_misses += 1
            agent = self.agents.parse(user_agent)
            found = self._by_agent[key] = (self.bots.classify(user_agent), _encode_agent(agent, level))
        return found

    def _place(self, ip: str | None, cdn_country: str | None, level: str) -> bytes:
        if self.geo is None and cdn_country is None:
            return _NO_PLACE
        key = (ip, cdn_country, level)
        found = self._by_address.get(key)
        if found is None:
            self.stats.place_misses += 1
            place = self.geo.lookup(ip) if self.geo is not None else NOWHERE
            found = self._by_address[key] = _encode_place(_with_cdn(place, cdn_country), level)
        return found


_NO_PLACE = copyformat.NULL * 3


def _spliced(rows: Sequence[bytes], fields: bytes) -> list[bytes]:
    """One request's rows with their run of NULLs replaced by `fields`. The rows of a request end alike (the same
    request columns and receive time), so the usual row is one slice and one concatenation, its end compared as a
    whole; a row that ends otherwise is spliced on its own, and one with no NULLs there is left as it is."""
    end = rows[0][-_END:]
    old, new = _NULLS + end, fields + end
    return [
        row[:_CUT] + new if row.endswith(old)
        else row[:_CUT] + fields + row[-_END:] if row.startswith(_NULLS, _CUT) else row
        for row in rows
    ]  # fmt: skip


def _with_cdn(place: Place, cdn_country: str | None) -> Place:
    """A trusted CDN's country wins (it saw the connection); the database's region and city only if they agree."""
    if cdn_country is None or cdn_country == place.country:
        return place
    return Place(cdn_country, None, None)


def _encode_agent(agent: Agent, level: str) -> bytes:
    text = copyformat.text
    detailed = level != "hipaa"  # hipaa: families only, no versions
    values: Sequence[str | None] = (
        agent.browser_family, agent.browser_version if detailed else None,
        agent.os_family, agent.os_version if detailed else None, agent.device_type,
    )  # fmt: skip
    return b"".join(_safe(text, v) for v in values)


def _encode_place(place: Place, level: str) -> bytes:
    region = place.region if level != "hipaa" else None  # hipaa: country only
    city = place.city if level == "standard" else None  # gdpr: country and region
    return b"".join(_safe(copyformat.text, v) for v in (place.country, region, city))


def _safe(encode: Callable[[str | None], bytes], value: str | None) -> bytes:
    try:
        return encode(value)
    except copyformat.Unencodable:
        return copyformat.NULL
