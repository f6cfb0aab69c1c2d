"""Client address: the TCP peer, or the X-Forwarded-For entry a trusted proxy vouches for."""

from __future__ import annotations

import ipaddress

from collector.settings import Network


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The client's address: X-Forwarded-For is believed only when the peer is a trusted proxy.

    The header is walked from the right, skipping trusted proxies; the first address that is not one
    is the client (entries further left were written by the client itself and can be forged).
    """
    if not trusted or not forwarded_for or peer is None or not _is_trusted(peer, trusted):
        return peer
    address = peer
    for part in reversed(forwarded_for.split(",")):
        candidate = part.strip()
        try:
            parsed = ipaddress.ip_address(candidate)
        except ValueError:
            return address  # garbage: nothing left of it can be trusted; keep the last good hop
        address = str(parsed)
        if not any(parsed in network for network in trusted):
            return address
    return address


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)


# Request headers the edge hands ingest as they are, in the rare request that has one: Global Privacy Control, and
# the country a CDN in front of us saw (Cloudflare, CloudFront).
SIGNAL_HEADERS = frozenset((b"sec-gpc", b"cf-ipcountry", b"cloudfront-viewer-country"))
Signals = tuple[tuple[bytes, bytes], ...]


def read_signals(signals: Signals, peer: str | None, trusted: tuple[Network, ...]) -> tuple[bool, str | None]:
    """(GPC asked, the CDN's country): the country, an ISO code, believed only when the peer is a trusted proxy
    (anyone else can send the header), and never Cloudflare's unknown (XX) or Tor (T1) markers."""
    gpc, country = False, None
    for name, value in signals:
        if name == b"sec-gpc":
            gpc = gpc or value.strip() == b"1"
        elif trusted and peer is not None and _is_trusted(peer, trusted):
            code = value.strip().upper()
            if len(code) == 2 and code.isascii() and code.isalpha() and code not in (b"XX", b"T1"):
                country = code.decode()
    return gpc, country
