"""Issue 11, item 11 (the edge's share): the header limit however the bytes arrive, compressed bytes bounded,
operator detail behind the admin token, proxied requests not taken for local operators, nginx forwarding only
the public paths."""

from __future__ import annotations

import asyncio
import re
import secrets
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from collector.edge.protocols import door_paths
from collector.settings import Settings
from tests.conftest import MakeApp, wait_for_rows
from tests.harness import collector_process, wait_until_live
from tests.security.conftest import figure

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = secrets.token_hex(32)
SECRET = secrets.token_hex(32)
EVENT = b'{"eventType":"pageview","siteId":"acme.com"}'
SMUGGLED = b'{"eventType":"smuggled","siteId":"localhost"}'


async def one_write(url: str, data: bytes) -> bytes:
    """Send `data` in a single write on a new connection and return what the server answers before it closes
    (a reset, when it closes with bytes of ours unread, may cost the answer: b"")."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(30):
            return await reader.read()
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_header_limit_holds_when_the_request_arrives_in_one_read(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """A 120 KB header sent in one write, alone or pipelined behind a small request, is answered 431 and never
    reaches the app (before, a request that one read completed skipped the count)."""
    with collector_process(database_url, tmp_path) as (proc, url):
        await wait_until_live(proc, url)
        big = b"GET /livez HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 120_000 + b"\r\nconnection: close\r\n\r\n"
        alone = await one_write(url, big)
        assert alone.startswith(b"HTTP/1.1 431 ") and b'"error":"headers_too_large"' in alone, alone[:200]
        # Pipelined behind a small request: the big one is a POST of an event that must never be stored.
        small = b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n"
        smuggled = (b"POST /collect HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 120_000 + b"\r\ncontent-length: "
                    + str(len(SMUGGLED)).encode() + b"\r\nconnection: close\r\n\r\n" + SMUGGLED)  # fmt: skip
        pipelined = await one_write(url, small + smuggled)
        assert b"events_processed" not in pipelined, pipelined[:300]
        # Many headers, each small, count as much as one big one.
        many = b"GET /livez HTTP/1.1\r\nhost: x\r\n" + b"x-h: 0123456789012345678901234567\r\n" * 3000 + b"\r\n"
        assert (await one_write(url, many)).startswith(b"HTTP/1.1 431 ")
        # A large body in one read is no header.
        big_event = b'{"eventType":"big","eventData":{"pad":"' + b"p" * 30_000 + b'"}}'
        body = b'{"eventType":"batch","siteId":"localhost","events":[' + b",".join([big_event] * 3) + b"]}"
        request = (b"POST /collect HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\n"
                   b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
        assert (await one_write(url, request)).startswith(b"HTTP/1.1 200 ")
        async with httpx.AsyncClient(base_url=url) as client:
            edge = (await client.get("/health")).json()["edge"]["connections_refused"]
        assert edge["headers_too_large"] == 3
        await wait_for_rows(db, 3)
        assert await db.fetchval("SELECT count(*) FROM events_log WHERE event_type = 'smuggled'") == 0
        figure("header bytes refused in one read", len(big))


def padded_gzip(payload: bytes, padding_blocks: int) -> bytes:
    """A valid gzip stream of `payload` led by `padding_blocks` empty deflate blocks (5 bytes each, no output)."""
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    empty_stored_block = b"\x00\x00\x00\xff\xff"  # BFINAL=0, stored, LEN=0, NLEN=0xffff
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(payload) + deflate.flush()
    trailer = struct.pack("<II", zlib.crc32(payload), len(payload))
    return header + empty_stored_block * padding_blocks + body + trailer


async def test_chunked_gzip_is_limited_in_compressed_bytes_too(make_app: MakeApp) -> None:
    """A chunked gzip body of 200 KB that inflates to 44 bytes is refused 413 under a 64 KB MAX_BODY_BYTES."""
    running = await make_app(max_body_bytes=65536)
    stream = padded_gzip(EVENT, 40_000)
    assert zlib.decompress(stream, wbits=31) == EVENT  # the stream is valid: only its compressed size is wrong

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: what the limit saw before was inflated bytes
        for start in range(0, len(stream), 16384):
            yield stream[start : start + 16384]

    response = await running.client.post(
        "/collect", content=chunks(), headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large"), response.text
    small = await running.client.post("/collect", content=padded_gzip(EVENT, 10), headers={"content-encoding": "gzip"})
    assert small.status_code == 200, small.text


async def test_production_keeps_health_detail_and_metrics_for_the_admin(make_app: MakeApp) -> None:
    """In production /health answers strangers its status alone and /metrics 401; the bearer token gets both in
    full, and /livez and /readyz stay public."""
    running = await make_app(environment="production", admin_token=TOKEN, ip_hash_secret=SECRET)
    client = running.client
    stranger = await client.get("/health")
    assert stranger.status_code == 200 and set(stranger.json()) <= {"status", "detail"}, stranger.text
    assert (await client.get("/metrics")).status_code == 401
    admin = {"authorization": f"Bearer {TOKEN}"}
    full = await client.get("/health", headers=admin)
    assert full.status_code == 200 and "buffer" in full.json()
    metrics = await client.get("/metrics", headers=admin)
    assert metrics.status_code == 200 and "collector_" in metrics.text
    assert (await client.get("/livez")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
async def test_development_admin_access_refuses_requests_that_came_through_a_proxy(
    make_app: MakeApp, header: str
) -> None:
    """Without ADMIN_TOKEN a loopback peer is an operator only when no proxy forwarded its request."""
    local = await make_app(client_host="127.0.0.1")
    assert (await local.client.get("/events/count")).status_code == 200
    proxied = await local.client.get("/events/count", headers={header: "for=203.0.113.9"})
    assert (proxied.status_code, proxied.json()["error"]) == (403, "forbidden")


PUBLIC = {"/collect", "/e", "/s.js", "/livez", "/readyz"} | door_paths(Settings())  # the front doors too


def test_the_shipped_nginx_config_forwards_only_the_public_paths() -> None:
    """deploy/nginx/collector.conf proxies /collect, the alias, the tracker and the probes, and nothing else."""
    text = (ROOT / "deploy/nginx/collector.conf").read_text()
    text = re.sub(r"#[^\n]*", "", text)
    blocks = re.findall(r"location\s+([^{]*?)\s*\{([^}]*)\}", text)
    proxied: set[str] = set()
    for selector, body in blocks:
        if "proxy_pass" not in body:
            continue
        parts = selector.split()
        assert parts[0] == "=", f"location {selector} proxies more than one exact path"
        proxied.add(parts[1])
    assert proxied == PUBLIC
    # Everything else is answered by nginx itself.
    assert any(sel.strip() == "/" and "return 404" in body for sel, body in blocks)
