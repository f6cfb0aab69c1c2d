"""The tracker script: collector/edge/tracker.js with the collect path filled in, served from memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

SOURCE = Path(__file__).with_name("tracker.js")


class TrackerScript:
    """The script's bytes and validators, built once at startup (no build step: the file is served as written)."""

    def __init__(self, collect_path: str) -> None:
        self.body = SOURCE.read_text(encoding="utf-8").replace("__COLLECT_PATH__", collect_path).encode()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'

    async def serve(self, request: Request) -> Response:
        headers = {
            "etag": self.etag,
            # Short enough that a fix reaches every site within the hour, long enough to spare the collector.
            "cache-control": "public, max-age=3600",
            "x-content-type-options": "nosniff",
            "access-control-allow-origin": "*",
        }
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type="application/javascript; charset=utf-8", headers=headers)
