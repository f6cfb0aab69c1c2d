"""The browser tests' web pages: a second loopback server serving a site's (or an attacker's) HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from tests.harness import free_port

CHROMIUM = Path("/usr/bin/chromium")


async def serve_html(pages: dict[str, str], scripts: dict[str, Path] | None = None) -> tuple[web.AppRunner, int]:
    """Serve `pages` (path → HTML) and `scripts` (path → a JavaScript file, read at each request) on a free
    loopback port; the caller cleans the runner up."""
    scripts = scripts or {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.path], content_type="text/html")

    async def script(request: web.Request) -> web.Response:
        return web.Response(body=scripts[request.path].read_bytes(), content_type="application/javascript")

    app = web.Application()
    for path in pages:
        app.router.add_get(path, page)
    for path in scripts:
        app.router.add_get(path, script)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def launch_chromium(playwright: Any) -> Any:
    """The system Chromium (Debian's package, never a download), resolving every *.test name to the page server."""
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        # Root in a container has no user namespace sandbox; *.test names lead to the loopback page server.
        args=["--no-sandbox", "--host-resolver-rules=MAP *.test 127.0.0.1"],
    )
