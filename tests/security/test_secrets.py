"""Issue 11, item 10: production refuses weak secrets and every secret value that ships in this repository."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from collector.ingest.sites import DEV_IP_HASH_SECRET
from collector.settings import Settings, SettingsError, weak_secret

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
STRONG = secrets.token_hex(32)


def production(**secrets_: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "production",
        "DATABASE_URL": "postgresql://db/x",
        "PIXEL_MANAGEMENT_URL": "https://pm.example",
        "ADMIN_TOKEN": STRONG,
        "IP_HASH_SECRET": secrets.token_hex(32),
        **secrets_,
    }


WEAK = [
    "REPLACE_ME",
    "compose-demo-admin-token",
    "compose-demo-ip-hash-secret",
    DEV_IP_HASH_SECRET,
    "x",
    "short-but-not-empty-0123456789",  # 30 characters
    "a" * 64,  # long, but one character
    "REPLACE_ME-" + "0123456789abcdef" * 2,  # long, but a placeholder with something appended
]


@pytest.mark.parametrize("name", ["ADMIN_TOKEN", "IP_HASH_SECRET"])
@pytest.mark.parametrize("value", WEAK)
def test_production_refuses_a_short_or_shipped_secret_naming_the_variable(name: str, value: str) -> None:
    """ENVIRONMENT=production with a weak or published ADMIN_TOKEN / IP_HASH_SECRET fails, naming the variable."""
    with pytest.raises(SettingsError, match=rf"^{name}: "):
        Settings.from_env(production(**{name: value}))


def test_production_accepts_generated_secrets_and_development_anything() -> None:
    """Two `openssl rand -hex 32` values start production; development keeps its defaults and short tokens."""
    assert Settings.from_env(production()).environment == "production"
    assert Settings.from_env({"ADMIN_TOKEN": "t", "IP_HASH_SECRET": "s"}).admin_token == "t"


# `ADMIN_TOKEN: value`, `ADMIN_TOKEN=value`, `${ADMIN_TOKEN:-value}` (and the same for IP_HASH_SECRET).
ASSIGNMENT = re.compile(r"(?:ADMIN_TOKEN|IP_HASH_SECRET)(?::-|\s*[:=]\s*)[\"']?([A-Za-z0-9_.\-+/]+)")


def shipped_secret_values() -> set[str]:
    """Every value the repository's deploy files, docs and code assign to ADMIN_TOKEN or IP_HASH_SECRET."""
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "deploy").rglob("*")]
    found = {DEV_IP_HASH_SECRET}
    for path in files:
        if not path.is_file() or path.suffix in (".png", ".json"):
            continue
        for value in ASSIGNMENT.findall(path.read_text(errors="replace")):
            found.add(value)
    return found


def test_no_secret_value_that_ships_in_the_repository_starts_production() -> None:
    """Each ADMIN_TOKEN / IP_HASH_SECRET value found in README, docs and deploy/ (and the development hash secret)
    is refused as a production secret."""
    values = shipped_secret_values()
    assert "REPLACE_ME" in values  # the scan sees the Kubernetes placeholders
    accepted = sorted(v for v in values if weak_secret(v) is None)
    assert not accepted, f"these shipped values would start production: {accepted}"


def test_the_service_refuses_to_start_with_the_kubernetes_placeholder() -> None:
    """`python -m collector` with deploy/k8s's REPLACE_ME exits 2 before starting anything, naming ADMIN_TOKEN."""
    env = {**os.environ, **production(ADMIN_TOKEN="REPLACE_ME")}
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:9/none"  # never reached: the check comes first
    result = subprocess.run(
        [sys.executable, "-m", "collector"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ADMIN_TOKEN: is a value that ships in this repository" in result.stderr
