"""A tiny pixel-management stand-in for docker compose: serves the documented read API from a JSON file.

    python standin.py --domains domains.json --port 8080

The file maps domain -> the config pixel-management returns (the same shape as collector/ingest/authorized_domains.json).
Standard library only, so that it runs on a bare python:3.11-slim image. Contract (shared/pixel-management-api.md):
  GET /api/v1/config/domain/{domain}  200 config | 404 {"detail": "Domain not authorized"} | 400 malformed domain
  GET /api/v1/config/client/{client}  200 config | 404 {"detail": "Client not found"}
  GET /api/v1/domains/all             {"domains": [...], "count": N}
and the collector's extension (docs/protocols.md): a domain's config may list `write_keys`;
  GET /api/v1/config/write_key/{key}  200 config + {"domain": <that domain>} | 404 {"detail": "Write key not found"}
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

DOMAIN_PREFIX = "/api/v1/config/domain/"
CLIENT_PREFIX = "/api/v1/config/client/"
WRITE_KEY_PREFIX = "/api/v1/config/write_key/"


def load(path: Path) -> dict[str, dict[str, Any]]:
    """Domain (lower-cased) -> config; refuses a file that is not a mapping of objects with a client_id."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must map domain names to config objects")
    configs = {}
    for domain, config in raw.items():
        if not isinstance(config, dict) or not isinstance(config.get("client_id"), str):
            raise ValueError(f"{path}: {domain}: a config object with a client_id is needed")
        configs[domain.lower()] = config
    return configs


def write_keys(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Write key -> its domain's config with that `domain` (the extension docs/protocols.md documents)."""
    return {key: {**config, "domain": domain} for domain, config in configs.items()
            for key in config.get("write_keys") or []}  # fmt: skip


def write_key_answer(by_key: dict[str, dict[str, Any]], key: str) -> tuple[int, dict[str, Any]]:
    found = by_key.get(key)
    return (200, found) if found else (404, {"detail": "Write key not found"})


def make_handler(configs: dict[str, dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    by_client: dict[str, dict[str, Any]] = {}
    for config in configs.values():
        by_client.setdefault(config["client_id"], config)
    by_key = write_keys(configs)

    class Handler(BaseHTTPRequestHandler):
        server_version = "pixel-management-standin/1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith(DOMAIN_PREFIX):
                domain = unquote(path[len(DOMAIN_PREFIX) :]).lower()
                if len(domain) < 3 or "/" in domain:
                    self._json(400, {"detail": "Invalid domain"})
                elif domain in configs:
                    self._json(200, configs[domain])
                else:
                    self._json(404, {"detail": "Domain not authorized"})
            elif path.startswith(CLIENT_PREFIX):
                client = unquote(path[len(CLIENT_PREFIX) :])
                if client in by_client:
                    self._json(200, by_client[client])
                else:
                    self._json(404, {"detail": "Client not found"})
            elif path.startswith(WRITE_KEY_PREFIX):
                self._json(*write_key_answer(by_key, unquote(path[len(WRITE_KEY_PREFIX) :])))
            elif path == "/api/v1/domains/all":
                self._json(200, {"domains": sorted(configs), "count": len(configs)})
            else:
                self._json(404, {"detail": "Not Found"})

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # one line per request is noise here
            return

    return Handler


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", type=Path, default=Path(__file__).with_name("domains.json"))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    configs = load(args.domains)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(configs))
    # docker stop sends SIGTERM: leave serve_forever cleanly instead of dying mid-response.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"pixel-management stand-in: {len(configs)} domains on {args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
