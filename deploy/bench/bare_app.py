"""The ceiling for `make bench`: bare Starlette + uvicorn answering POST /collect, with none of the collector's work.

Same server stack as the collector (uvloop, httptools, no access log), same payloads: it reads the body, parses it
with orjson and answers a small JSON, so the collector's throughput can be read as a fraction of what the stack
itself allows on the same core. Listens on HOST/PORT (default 127.0.0.1:8000).
"""

from __future__ import annotations

import os
import signal

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _json(body: object, status_code: int) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


async def collect(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    events = payload.get("events") if payload.get("eventType") == "batch" else None
    count = len(events) if isinstance(events, list) else 1
    return _json({"status": "success", "events_processed": count}, 200)


async def livez(request: Request) -> Response:
    return _json({"status": "alive"}, 200)


app = Starlette(routes=[Route("/collect", collect, methods=["POST"]), Route("/livez", livez)])


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    # uvicorn re-raises the SIGTERM it drained on; exit 0 then, as the collector does, so the bench can tell a
    # clean stop from a crash.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
