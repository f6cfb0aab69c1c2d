"""The version is written once (pyproject.toml) and read everywhere it is shown; CHANGELOG.md keeps the releases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from collector import __version__
from collector.edge.openapi import document
from collector.ops.metrics import Metrics
from collector.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_every_place_shows_the_version_of_pyproject() -> None:
    """GET /'s and /openapi.json's version and collector_build_info's label are pyproject.toml's version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == version
    assert document(Settings())["info"]["version"] == version
    scrape = Metrics(multiproc_dir=None).render().decode()
    assert f'version="{version}"' in scrape.split("collector_build_info{", 1)[1].split("}", 1)[0]


def test_python_m_collector_version_prints_the_version_without_reading_settings() -> None:
    """`python -m collector --version` prints pyproject's version and exits 0, even with settings that stop a start."""
    env = {**os.environ, "WORKERS": "not-a-number", "ENVIRONMENT": "production"}
    run = subprocess.run(
        [sys.executable, "-m", "collector", "--version"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, f"{VERSION}\n", "")


def test_no_module_writes_the_version() -> None:
    """No module of collector/ or pipeline/ holds the version as a literal: they read the package metadata."""
    literal = re.compile(rf"['\"]{re.escape(VERSION)}['\"]")
    written = [
        str(path.relative_to(ROOT))
        for package in ("collector", "pipeline")
        for path in (ROOT / package).rglob("*.py")
        if literal.search(path.read_text(encoding="utf-8"))
    ]
    assert not written


def test_the_changelog_has_an_unreleased_section_and_names_every_schema_migration() -> None:
    """CHANGELOG.md starts with [Unreleased] (Keep a Changelog) and names each migration an upgrade applies."""
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.M)
    assert sections and sections[0] == "Unreleased", sections
    migrations = sorted(p.stem for p in (ROOT / "collector" / "storage" / "migrations").glob("*.sql"))
    assert migrations
    missing = [name for name in migrations if f"`{name}`" not in changelog]
    assert not missing, f"CHANGELOG.md does not name {missing}"
