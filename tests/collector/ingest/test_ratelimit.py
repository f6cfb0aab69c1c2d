"""Token buckets per key, and the origin rules they sit beside."""

from __future__ import annotations

from collector.ingest.origins import candidates, host_of, within
from collector.ingest.ratelimit import RateLimiter, limiter
from tests.clock import FakeClock


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    """A key may send `burst` requests at once, then one per 1/rate seconds; the wait is rounded up, at least 1 s."""
    clock = FakeClock()
    buckets = RateLimiter(0.25, 3, clock=clock)
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 4]
    clock.now += 2.0
    assert buckets.take("a") == 2  # half a token so far
    clock.now += 2.0
    assert buckets.take("a") == 0
    assert buckets.take("b") == 0  # another key has its own bucket


def test_full_buckets_are_forgotten_when_the_table_is_full() -> None:
    """Past max_keys, buckets that refilled are dropped and the busy ones kept."""
    clock = FakeClock()
    buckets = RateLimiter(1.0, 2, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        buckets.take(key)
    buckets.take("c")
    buckets.take("c")
    clock.now += 1.0  # a and b are full again, c is not
    buckets.take("d")
    assert len(buckets) == 2
    assert buckets.take("c") == 0 and buckets.take("c") == 1


def test_zero_rate_means_no_limiter() -> None:
    """RATE_LIMIT_*_PER_S = 0 turns the limit off."""
    assert limiter(0, 10) is None and limiter(1.5, 10) is not None


def test_origin_hosts_and_site_membership() -> None:
    """An origin belongs to a site when its host is the site or a subdomain; opaque or odd origins match nothing."""
    assert host_of(b"https://Shop.Acme.com:8443") == "shop.acme.com"
    assert host_of(b"https://acme.com/path?q=1") == "acme.com"
    assert host_of(b"null") == "" and host_of(b"\xff://x") == ""
    assert within("acme.com", "acme.com") and within("a.b.acme.com", "acme.com")
    assert not within("xacme.com", "acme.com") and not within("acme.com", "shop.acme.com")
    assert not within("", "acme.com")
    assert candidates("a.b.shop.acme.co.uk") == ["a.b.shop.acme.co.uk", "b.shop.acme.co.uk", "shop.acme.co.uk",
                                                 "acme.co.uk", "co.uk"]  # fmt: skip
    assert candidates("localhost") == ["localhost"] and candidates("127.0.0.1") == ["127.0.0.1"]
