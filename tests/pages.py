"""The browser tests' web pages: a second loopback server serving a site's (or an attacker's) HTML."""

from __future__ import annotations

from aiohttp import web

from tests.harness import free_port


async def serve_html(pages: dict[str, str]) -> tuple[web.AppRunner, int]:
    """Serve `pages` (path → HTML) on a free loopback port; the caller cleans the runner up."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.path], content_type="text/html")

    app = web.Application()
    for path in pages:
        app.router.add_get(path, page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port
