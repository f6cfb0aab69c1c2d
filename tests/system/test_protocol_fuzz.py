"""schemathesis against the Segment, Snowplow and Plausible doors of the real collector under uvicorn.

/openapi.json documents our own API; the doors speak other vendors' protocols, so this test fuzzes them from a
document of their own (PROTOCOLS_DOCUMENT below: the fields the mappings read, typed loosely so that the fuzzer also
sends what a client must not). The short run is part of `make test`; FUZZ_EXAMPLES makes it longer, as test_fuzz's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.harness import FUZZ_EXAMPLES, collector_process, run_schemathesis, wait_until_live
from tests.pixel_management import site_config

KEY = "wkFuzzWriteKey01"
pytestmark = pytest.mark.timeout(120 + FUZZ_EXAMPLES * 10)

ANY: dict[str, Any] = {}  # any JSON value
TEXT_OR_ANY = {"anyOf": [{"type": "string"}, ANY]}
SEGMENT_MESSAGE = {
    "type": "object",
    "properties": {
        name: TEXT_OR_ANY
        for name in ("type", "event", "messageId", "anonymousId", "userId", "timestamp", "sentAt", "writeKey")
    }
    | {"properties": {"type": "object"}, "traits": {"type": "object"},
       "context": {"type": "object", "properties": {"ip": TEXT_OR_ANY, "userAgent": TEXT_OR_ANY,
                   "page": {"type": "object", "properties": {"url": TEXT_OR_ANY, "path": TEXT_OR_ANY}}}}},
}  # fmt: skip
SNOWPLOW_PARAMS = ("e", "eid", "aid", "url", "refr", "dtm", "stm", "ttm", "ue_px", "ue_pr", "cx", "co", "duid", "sid")


def _post(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": {media: {"schema": schema}}},
        "responses": {"default": {"description": "the protocol's answer or a JSON error"}},
    }


PROTOCOLS_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "collector front doors", "version": "1"},
    "paths": {
        "/v1/track": {"post": _post(SEGMENT_MESSAGE)},
        "/v1/batch": {
            "post": _post(
                {
                    "type": "object",
                    "properties": {"batch": {"type": "array", "items": SEGMENT_MESSAGE}, "sentAt": TEXT_OR_ANY},
                }
            )
        },
        "/com.snowplowanalytics.snowplow/tp2": {
            "post": _post(
                {
                    "type": "object",
                    "properties": {
                        "schema": {"type": "string"},
                        "data": {
                            "type": "array",
                            "items": {"type": "object", "properties": {p: {"type": "string"} for p in SNOWPLOW_PARAMS}},
                        },
                    },
                }
            )
        },
        "/i": {
            "get": {
                "parameters": [{"name": p, "in": "query", "schema": {"type": "string"}} for p in SNOWPLOW_PARAMS],
                "responses": {"default": {"description": "a GIF"}},
            }
        },
        "/api/event": {
            "post": _post(
                {
                    "type": "object",
                    "properties": {n: TEXT_OR_ANY for n in ("name", "url", "domain", "referrer", "props", "revenue")},
                },
                "text/plain",
            )
        },
    },
}


async def test_schemathesis_finds_no_server_error_at_the_protocol_doors(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Generated requests to every door (with a valid write key) get no 5xx, and the server logs no traceback."""
    domains = {"localhost": {**site_config("client_fuzz"), "write_keys": [KEY]}}
    (tmp_path / "domains.json").write_text(json.dumps(domains))
    (tmp_path / "protocols.json").write_text(json.dumps(PROTOCOLS_DOCUMENT))
    with collector_process(database_url, tmp_path, AUTHORIZED_DOMAINS_FILE=str(tmp_path / "domains.json")) as (
        proc,
        url,
    ):
        await wait_until_live(proc, url)
        await run_schemathesis(
            proc, str(tmp_path / "protocols.json"), "--url", url, "--checks", "not_a_server_error", "--auth", f"{KEY}:"
        )
    log = (tmp_path / "collector.log").read_text()
    assert "Traceback" not in log, log[-4000:]
