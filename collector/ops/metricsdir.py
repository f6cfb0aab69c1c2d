"""The folder where the workers of WORKERS>1 keep their metric files, without importing prometheus_client.

The parent that starts the workers prepares and removes it; importing the metrics module there would load
prometheus_client into a process that never serves a scrape.
"""

from __future__ import annotations

import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir(data_dir: str) -> Path:
    """Where the workers of one service keep their metric files."""
    return Path(data_dir) / "metrics"


def prepare_multiprocess_dir(data_dir: str) -> Path:
    """Empty (a previous run's files would be summed in) and create the metrics folder; before workers start."""
    folder = multiprocess_dir(data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def remove_multiprocess_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
