"""The limits below the app, on the real `python -m collector` under uvicorn: header bytes and the read deadline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import wait_for_rows
from tests.harness import collector_process, wait_until_live

pytestmark = pytest.mark.timeout(90)

EVENT = json.dumps({"eventType": "raw", "siteId": "localhost"}).encode()


async def exchange(url: str, chunks: list[bytes], pause_s: float = 0.0) -> bytes:
    """Send `chunks` on one raw connection (pausing between them) and return all the server answers until it closes."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause_s)
        async with asyncio.timeout(30):
            return await reader.read()
    finally:
        writer.close()


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /collect HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)  # fmt: skip


async def test_oversized_headers_get_431_and_big_bodies_do_not(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Headers past MAX_HEADER_BYTES are answered 431 and the connection closed; a large body is no header."""
    with collector_process(database_url, tmp_path, MAX_HEADER_BYTES="4096") as (proc, url):
        await wait_until_live(proc, url)
        # The header never ends: it is refused once past the limit, not buffered until it does.
        answer = await exchange(url, [b"GET /livez HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000])
        assert answer.startswith(b"HTTP/1.1 431 ") and b'"error":"headers_too_large"' in answer
        big = json.dumps({"eventType": "big", "siteId": "localhost", "eventData": {"pad": "p" * 30_000}}).encode()
        async with httpx.AsyncClient(base_url=url) as client:
            # Two requests on one keep-alive connection, each with a body much larger than the header limit.
            for _ in range(2):
                response = await client.post("/collect", content=big, headers={"content-type": "application/json"})
                assert response.status_code == 200, response.text
            edge = (await client.get("/health")).json()["edge"]["connections_refused"]
        assert edge["headers_too_large"] == 1
        await wait_for_rows(db, 2)


async def test_a_client_trickling_its_request_is_cut_off_with_408(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """A body (or headers) not complete READ_TIMEOUT_S after the first byte gets 408 and a closed connection."""
    with collector_process(database_url, tmp_path, READ_TIMEOUT_S="1") as (proc, url):
        await wait_until_live(proc, url)
        request = post(EVENT)
        slow_body = await exchange(url, [request[:-5]], pause_s=0.0)
        assert slow_body.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in slow_body
        slow_headers = await exchange(url, [b"POST /collect HTTP/1.1\r\nhost: x\r\n"])
        assert slow_headers.startswith(b"HTTP/1.1 408 ")
        # A request sent in pieces that arrive within the deadline is served.
        pieces = [request[:20], request[20:-5], request[-5:] + b""]
        served = await exchange(url, [*pieces, b"GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"], 0.2)
        assert served.startswith(b"HTTP/1.1 200 ") and served.count(b"HTTP/1.1 200 ") == 2
        async with httpx.AsyncClient(base_url=url) as client:
            edge = (await client.get("/health")).json()["edge"]["connections_refused"]
        assert edge["read_timeouts"] == 2
        await wait_for_rows(db, 1)


async def test_answers_name_no_server_software(database_url: str, tmp_path: Path) -> None:
    """No `Server` header on any answer (it tells a scanner what to try); the Date header HTTP asks for stays."""
    with collector_process(database_url, tmp_path) as (proc, url):
        await wait_until_live(proc, url)
        async with httpx.AsyncClient(base_url=url) as client:
            answers = [
                await client.post("/collect", content=EVENT, headers={"content-type": "application/json"}),
                await client.get("/livez"),
                await client.get("/no-such-page"),
            ]
    assert [a.status_code for a in answers] == [200, 200, 404]
    assert all("server" not in a.headers and "date" in a.headers for a in answers)
