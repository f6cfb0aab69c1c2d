"""Origins: which browser origins may send a site's events (the CORS headers that tell the browser so: edge.cors).

"Authorized" means the Origin's host (or, without an Origin, the Referer's) is the event's authorized site domain
or a subdomain of it. This stops a copied snippet from feeding another site's data in browsers; it does not stop
forged server-side traffic, which sends any header it likes (or none, and is then judged by siteId alone).
"""

from __future__ import annotations

from collections.abc import Callable

from collector.errors import DomainNotAuthorized
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.sites import normalize_domain

# host_of's cache is keyed by header bytes of at most this length (an origin is scheme, host and port; a longer
# Referer is cut at the end of its host first), so its 4,096 entries hold at most ~4,096 x 0.8 KB = 3.3 MB.
MAX_ORIGIN_BYTES = 300
HOST_CACHE_ENTRIES = 4096


class _HostCache(dict[bytes, str]):
    """Hosts by Origin/Referer value. A hit is one C-level dict lookup (this is per browser request); a miss
    parses, caching only values of at most MAX_ORIGIN_BYTES; cleared when full."""

    def __missing__(self, header: bytes) -> str:
        if len(header) > MAX_ORIGIN_BYTES:
            # A Referer's path and query say nothing about its site: cut them (from the first "/" after the
            # scheme's) so that neither the cache nor the host parser sees them. Without one early, it is junk.
            end = header.find(b"/", header.find(b"://") + 3)
            return self[header[:end]] if 0 < end <= MAX_ORIGIN_BYTES else ""
        host = _parse_host(header)
        if len(self) >= HOST_CACHE_ENTRIES:
            self.clear()
        self[header] = host
        return host


def _parse_host(header: bytes) -> str:
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        return ""
    if "://" not in text:
        return ""
    return normalize_domain(text) or ""


_HOSTS = _HostCache()
# The normalized host of an Origin or Referer value; "" (matching no site) for `null` (an opaque origin: sandboxed
# frame, file://) or anything else without a valid host.
host_of: Callable[[bytes], str] = _HOSTS.__getitem__


def within(host: str, domain: str) -> bool:
    """`host` is `domain` or one of its subdomains."""
    return host == domain or (host.endswith(domain) and host[-len(domain) - 1] == ".")


def candidates(host: str) -> list[str]:
    """The domains that could authorize `host`: itself, then its parents with two labels or more.

    A preflight names no site, so a page any number of labels below its authorized domain is found by walking up;
    the walk is bounded by host-name syntax (host_of admits at most 253 bytes, so at most 126 candidates).
    """
    if ":" in host or host.replace(".", "").isdigit():  # an IP address has no parent domains
        return [host]
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(max(1, len(labels) - 1))]


async def origin_allowed(authorizer: DomainAuthorizer, host: str) -> bool:
    """True if `host` or one of its parent domains is authorized (cached lookups; AuthorizationUnavailable
    propagates: a preflight must not be refused because pixel-management is down)."""
    for domain in candidates(host):
        try:
            await authorizer.authorize(domain)
        except DomainNotAuthorized:
            continue
        return True
    return False
