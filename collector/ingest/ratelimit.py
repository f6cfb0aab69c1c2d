"""RateLimiter: token buckets per key (client address, site), in this worker's memory."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

# An IPv6 client controls at least a /64 (one customer's LAN), so its addresses share one bucket.
IPV6_PREFIX = 64


class RateLimiter:
    """`rate_per_s` tokens a second per key, up to `burst`; one request takes one token.

    Each key has its own bucket, so a hot key exhausts only its own budget and never another's. Buckets live in
    a plain dict: a full bucket carries no information, so when the dict passes `max_keys` the full ones are
    dropped (amortized O(1) per request; if every bucket is in use the dict is cleared, which errs on the
    side of letting traffic through). Keys are addresses (address_key: at most 43 characters) or authorized
    site domains (at most 253), so the dict holds at most 50,000 x ~0.3 KB = 15 MB (addresses: ~12 MB).
    """

    def __init__(
        self, rate_per_s: float, burst: int, *, max_keys: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, time of the last refill]

    def take(self, key: str) -> int:
        """0 if `key` may proceed (a token is taken), else the whole seconds until it may (at least 1)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._prune(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0
        bucket[0] = tokens
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


def address_key(ip: str) -> str:
    """The rate-limit key of a client address: an IPv4 address itself (also when IPv4-mapped), an IPv6 one its /64.

    Without this, one host rotating through the 2^64 addresses of its own network gets a fresh bucket per request.
    """
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> (128 - IPV6_PREFIX) << (128 - IPV6_PREFIX), IPV6_PREFIX)))


def limiter(rate_per_s: float, burst: int) -> RateLimiter | None:
    """A limiter, or None when the rate is 0 (off)."""
    return RateLimiter(rate_per_s, burst) if rate_per_s > 0 else None
