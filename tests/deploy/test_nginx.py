"""deploy/nginx: the shipped proxy config agrees with the collector's own connection timeouts."""

from __future__ import annotations

import re
from pathlib import Path

from collector.settings import Settings

NGINX = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "collector.conf"
# The default idle timeouts of the proxies most often put in front of a service: AWS ALB (60 s) and nginx's
# upstream keepalive_timeout (60 s).
COMMON_PROXY_IDLE_S = 60


def upstream_keepalive_timeout_s() -> float:
    """The keepalive_timeout inside the `upstream collector` block, in seconds."""
    text = NGINX.read_text()
    block = re.search(r"upstream collector \{(.*?)\}", text, re.S)
    assert block is not None, "no upstream collector block"
    found = re.search(r"^\s*keepalive_timeout\s+(\d+)s;", block.group(1), re.M)
    assert found is not None, "the upstream block sets no keepalive_timeout (nginx's default is 60 s)"
    return float(found.group(1))


def test_the_collector_keeps_idle_connections_longer_than_common_proxies() -> None:
    """KEEPALIVE_TIMEOUT_S defaults above a typical proxy's idle timeout, so the proxy always closes first and never
    sends a request on a connection the collector is closing (which the client sees as a reset)."""
    assert Settings().keepalive_timeout_s > COMMON_PROXY_IDLE_S


def test_shipped_nginx_drops_idle_upstream_connections_before_the_collector_does() -> None:
    """The shipped nginx upstream keepalive_timeout is below the collector's default KEEPALIVE_TIMEOUT_S."""
    assert upstream_keepalive_timeout_s() < Settings().keepalive_timeout_s
