"""errors.render: every error answer, from Starlette's handlers, the /collect fast path and the protocol below the
app, is one function's bytes."""

from __future__ import annotations

from collector.edge.protocol import _response
from collector.errors import HeadersTooLarge, HttpError, InvalidSite, TooManyConnections, render
from tests.conftest import Running


async def test_starlette_and_the_collect_path_answer_errors_in_the_same_bytes(running: Running) -> None:
    """An unknown path (Starlette's 404) and a refused event (/collect's own path) answer render()'s bytes."""
    missing = await running.client.get("/no-such-page")
    assert missing.status_code == 404
    assert missing.content == render(HttpError(404, "not_found", "Not Found"))
    refused = await running.post({"eventType": "x", "siteId": "bad site"})
    assert refused.status_code == 422
    assert refused.content == render(InvalidSite(refused.json()["detail"]))


def test_the_protocols_refusals_are_rendered_the_same_way() -> None:
    """A refusal below the app carries its status line and render()'s body, whatever its status."""
    for exc in (HeadersTooLarge("the request line and headers exceed 10 bytes"), TooManyConnections("retry later")):
        raw = _response(exc)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {exc.status} ".encode()) and b"connection: close" in head
        assert body == render(exc) and f"content-length: {len(body)}".encode() in head
