"""schemathesis against the Segment, Snowplow and Plausible doors of the real collector under uvicorn.

/openapi.json documents our own API; the doors speak other vendors' protocols, so this test fuzzes them from a
document of their own (PROTOCOLS_DOCUMENT below: the fields the mappings read, typed loosely so that the fuzzer also
sends what a client must not). The short run is part of `make test`; FUZZ_EXAMPLES makes it longer, as test_fuzz's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.harness import collector_process, wait_until_live
from tests.pixel_management import site_config

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
KEY = "wkFuzzWriteKey01"
pytestmark = pytest.mark.timeout(120 + EXAMPLES * 10)

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
        cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert cli, "schemathesis is a dev dependency: make install-dev"
        run = await asyncio.create_subprocess_exec(
            cli, "run", str(tmp_path / "protocols.json"), "--url", url, "--checks", "not_a_server_error",
            "--max-examples", str(EXAMPLES), "--seed", os.environ.get("FUZZ_SEED", "0"), "--no-color",
            "--auth", f"{KEY}:",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await run.communicate()
        report = output.decode(errors="replace")
        if EXAMPLES > 5 or run.returncode:
            print(report)
        assert run.returncode == 0, report[-4000:]
        assert proc.poll() is None, "the collector died under the fuzzer"
    log = (tmp_path / "collector.log").read_text()
    assert "Traceback" not in log, log[-4000:]
