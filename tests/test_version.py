"""The version is written once (pyproject.toml) and read everywhere it is shown."""

from __future__ import annotations

import tomllib
from pathlib import Path

from collector import __version__
from collector.edge.openapi import document
from collector.ops.metrics import Metrics
from collector.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_place_shows_the_version_of_pyproject() -> None:
    """GET /'s and /openapi.json's version and collector_build_info's label are pyproject.toml's version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == version
    assert document(Settings())["info"]["version"] == version
    scrape = Metrics(multiproc_dir=None).render().decode()
    assert f'version="{version}"' in scrape.split("collector_build_info{", 1)[1].split("}", 1)[0]
