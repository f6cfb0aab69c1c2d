"""Your own site in one step: AUTHORIZED_DOMAINS and AUTHORIZED_DOMAINS_FILE add to the development defaults, and a
malformed domains file stops the start with one line naming the file and the entry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.ingest.auth import PixelManagementDirectory
from collector.ingest.directories import make_directory
from collector.settings import Settings, SettingsError
from tests.conftest import MakeApp

SITE = {"client_id": "client_shop", "privacy_level": "standard"}


def _settings(**environ: str) -> Settings:
    return Settings.from_env(environ)


async def _client_of(settings: Settings, domain: str) -> str | None:
    config = await make_directory(settings).lookup(domain)
    return None if config is None else str(config["client_id"])


async def test_authorized_domains_add_to_the_development_defaults() -> None:
    """AUTHORIZED_DOMAINS=shop.example.com,www.shop.example.com authorizes both, as one client, and localhost still."""
    settings = _settings(AUTHORIZED_DOMAINS="shop.example.com, www.shop.example.com")
    assert await _client_of(settings, "shop.example.com") == "client_shop_example_com"
    assert await _client_of(settings, "www.shop.example.com") == "client_shop_example_com"
    assert await _client_of(settings, "localhost") == "client_local_dev"
    assert await _client_of(settings, "example.com") == "client_example"
    assert await _client_of(settings, "other.example.com") is None


async def test_an_authorized_domain_may_name_its_client() -> None:
    """`domain=client_id` attributes that domain's events to the client named; a URL is taken for its host."""
    settings = _settings(AUTHORIZED_DOMAINS="blog.example.org=client_blog,https://Shop.Example.com/")
    assert await _client_of(settings, "blog.example.org") == "client_blog"
    assert await _client_of(settings, "shop.example.com") == "client_shop_example_com"


async def test_the_domains_file_adds_to_the_development_defaults(tmp_path: Path) -> None:
    """AUTHORIZED_DOMAINS_FILE's domains join the defaults (localhost keeps working); AUTHORIZED_DOMAINS joins both."""
    domains = tmp_path / "domains.json"
    domains.write_bytes(orjson.dumps({"shop.example.com": SITE}))
    settings = _settings(AUTHORIZED_DOMAINS_FILE=str(domains), AUTHORIZED_DOMAINS="blog.example.org")
    assert await _client_of(settings, "shop.example.com") == "client_shop"
    assert await _client_of(settings, "localhost") == "client_local_dev"
    assert await _client_of(settings, "blog.example.org") == "client_blog_example_org"


async def test_an_authorized_domain_is_accepted_end_to_end(make_app: MakeApp) -> None:
    """An event of a domain given in AUTHORIZED_DOMAINS is acknowledged and attributed to that domain's client."""
    running = await make_app(pixel_management_url=None, authorized_domains=("shop.example.com",))
    response = await running.post({"eventType": "page_view", "siteId": "www.shop.example.com"})
    assert response.status_code == 403, response.text  # www. is another host name: list it too
    response = await running.post({"eventType": "page_view", "siteId": "shop.example.com"})
    assert response.is_success, response.text
    assert response.json()["client_id"] == "client_shop_example_com"


@pytest.mark.parametrize(
    "value", ["shop.example.com,bad domain", "shop.example.com=a=b", "=client_x", "shop.example.com=bad client"]
)
def test_a_malformed_authorized_domains_value_is_refused(value: str) -> None:
    """A malformed AUTHORIZED_DOMAINS entry is a configuration error naming the variable and the entry."""
    with pytest.raises(SettingsError, match=r"^AUTHORIZED_DOMAINS: .*"):
        _settings(AUTHORIZED_DOMAINS=value)


async def test_pixel_management_ignores_the_development_domains() -> None:
    """With PIXEL_MANAGEMENT_URL (required in production) the domains come from it alone, as before."""
    settings = _settings(PIXEL_MANAGEMENT_URL="http://127.0.0.1:9", AUTHORIZED_DOMAINS="shop.example.com")
    directory = make_directory(settings)
    try:
        assert isinstance(directory, PixelManagementDirectory)
    finally:
        await directory.close()


MALFORMED: dict[str, tuple[bytes, str]] = {
    "not-json": (b'{"shop.example.com": {"client_id": "client_shop",}', "cannot be read as JSON"),
    "no-client-id": (orjson.dumps({"shop.example.com": {"privacy_level": "gdpr"}}), "'shop.example.com'"),
    "bad-domain": (orjson.dumps({"shop example.com": SITE}), "'shop example.com'"),
    "not-an-object": (orjson.dumps({"shop.example.com": ["client_shop"]}), "'shop.example.com'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_domains_file_stops_the_start_with_one_line(tmp_path: Path, database_url: str, case: str) -> None:
    """`python -m collector` with a malformed AUTHORIZED_DOMAINS_FILE exits 2 printing one line: file and entry."""
    content, entry = MALFORMED[case]
    domains = tmp_path / "domains.json"
    domains.write_bytes(content)
    env: dict[str, Any] = {
        **os.environ,
        "DATABASE_URL": database_url,  # the old code got as far as the lifespan; nothing embedded to start either
        "PORT": "9",
        "DATA_DIR": str(tmp_path / "data"),
        "AUTHORIZED_DOMAINS_FILE": str(domains),
    }
    run = subprocess.run(
        [sys.executable, "-m", "collector"], env=env, capture_output=True, text=True, timeout=30
    )  # fmt: skip
    lines = (run.stdout + run.stderr).splitlines()
    assert run.returncode == 2, lines
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert str(domains) in lines[0] and entry in lines[0], lines
