"""Reading a /metrics scrape: samples by name and labels, and promtool when the machine has it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels` (workers add up; pid labels are summed)."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    assert found, f"no sample {name}{labels} in the scrape"
    return sum(found)


def families(text: str) -> set[str]:
    """Metric family names declared in a scrape (by its TYPE lines, so metrics with no sample yet count too)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
    return names


def promtool() -> str:
    """The promtool binary, or skip: Debian's `prometheus` package provides it (make test installs it as root)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: apt-get install prometheus (make test does it when run as root)")
    return path


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)
