"""The embedded PostgreSQL (pgserver) that development runs use when DATABASE_URL is unset."""

from __future__ import annotations

import logging
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


@contextmanager
def embedded_postgres(data_dir: str) -> Iterator[str]:
    """Start one PostgreSQL with its data under `data_dir`/postgres, yield its URL, stop it on exit."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise SystemExit(
            "DATABASE_URL is unset and the embedded PostgreSQL (pgserver) is not installed: "
            "run `make run`, or pip install '.[embedded]', or set DATABASE_URL"
        ) from None
    pgdata = Path(data_dir).resolve() / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: pgserver's own stop counts handles in a file that a killed run leaves stale,
    # and then never stops the server; this process owns the server and stops it itself.
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    url: str = server.get_uri()
    logger.info("Started embedded PostgreSQL in %s", pgdata)
    try:
        yield url
    finally:
        try:
            pgserver.pg_ctl(  # type: ignore[attr-defined]
                ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user, timeout=60
            )
            logger.info("Stopped embedded PostgreSQL")
        except (OSError, subprocess.SubprocessError) as exc:
            logger.error("Stopping the embedded PostgreSQL failed: %s", exc)
