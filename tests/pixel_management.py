"""A real HTTP server playing pixel-management's documented contract, with knobs for outages."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp import web


def site_config(
    client_id: str,
    privacy_level: str = "standard",
    *,
    ip_enabled: bool = True,
    features: dict[str, Any] | None = None,
    consent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config body shaped like pixel-management's, with the per-privacy-level defaults it documents.

    `features` the collector reads (docs/enrichment.md): `bots` ("flag" | "drop"), `bot_ip_exclusions` (CIDRs),
    `cookieless` (bool); `consent` replaces the level's default {"required", "default_behavior"}.
    """
    hashing = privacy_level in ("gdpr", "hipaa")
    consent = consent or {"required": hashing, "default_behavior": "opt_out" if privacy_level == "gdpr" else "allow"}
    return {
        "client_id": client_id,
        "privacy_level": privacy_level,
        "ip_collection": {
            "enabled": ip_enabled,
            "hash_required": hashing,
            "salt": f"salt-{client_id}" if hashing else None,
        },
        "consent": consent,
        "features": features or {},
        "deployment": {"type": "shared", "hostname": None},
    }


class PixelManagement:
    """Serves the domain, client and domain-list endpoints from `domains`; `status` forces an outage, `delay_s`
    slows domain and write-key lookups."""

    def __init__(self) -> None:
        self.domains: dict[str, dict[str, Any]] = {}
        self.write_keys: dict[str, str] = {}  # write key -> the domain its client's server-side events belong to
        self.lookups: Counter[str] = Counter()
        self.status: int | None = None
        self.delay_s = 0.0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _domain(self, request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        self.lookups[domain] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status is not None:
            return web.json_response({"detail": "unavailable"}, status=self.status)
        if len(domain) < 3:
            return web.json_response({"detail": "Invalid domain"}, status=400)
        config = self.domains.get(domain)
        if config is None:
            return web.json_response({"detail": "Domain not authorized"}, status=404)
        return web.json_response(config)

    async def _client(self, request: web.Request) -> web.Response:
        client_id = request.match_info["client_id"]
        self.lookups[f"client:{client_id}"] += 1
        if self.status is not None:
            return web.json_response({"detail": "unavailable"}, status=self.status)
        for config in self.domains.values():
            if config["client_id"] == client_id:
                return web.json_response(config)
        return web.json_response({"detail": "Client not found"}, status=404)

    async def _write_key(self, request: web.Request) -> web.Response:
        """The documented extension (docs/protocols.md): a write key's client config, with its `domain`."""
        key = request.match_info["key"]
        self.lookups[f"write_key:{key}"] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status is not None:
            return web.json_response({"detail": "unavailable"}, status=self.status)
        domain = self.write_keys.get(key)
        if domain is None:
            return web.json_response({"detail": "Write key not found"}, status=404)
        return web.json_response({**self.domains[domain], "domain": domain})

    async def _all(self, request: web.Request) -> web.Response:
        return web.json_response({"domains": sorted(self.domains), "count": len(self.domains)})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/config/domain/{domain}", self._domain)
        app.router.add_get("/api/v1/config/client/{client_id}", self._client)
        app.router.add_get("/api/v1/domains/all", self._all)
        app.router.add_get("/api/v1/config/write_key/{key}", self._write_key)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
