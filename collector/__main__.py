"""Entry point: read Settings once, configure logging, start the embedded database if needed, run uvicorn."""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
from contextlib import ExitStack

import uvicorn

from collector.app import CollectorApp, create_app
from collector.embedded import embedded_postgres
from collector.metrics import MULTIPROC_ENV, prepare_multiprocess_dir, remove_multiprocess_dir
from collector.protocol import EdgeProtocol, connection_cap
from collector.settings import Settings, SettingsError

LOG_FORMAT = "%(asctime)s %(levelname)s:%(name)s:%(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, force=True)
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every command line at INFO


def load_settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"collector: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def worker_app() -> CollectorApp:
    """The app factory each uvicorn worker calls; the parent already checked these settings."""
    settings = load_settings()
    configure_logging(settings.log_level)
    EdgeProtocol.configure(settings)  # before uvicorn accepts this worker's first connection
    return create_app(settings)


def raise_file_limit() -> int:
    """Raise this process's soft file limit to its hard limit (the workers inherit it); returns the new soft limit.

    Each client connection holds a file descriptor: the usual soft limit of 1,024 let ~1,000 idle sockets stop
    all service, while the hard limit is there to be used.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. a hard limit above the kernel's nr_open
            logging.getLogger(__name__).warning("Could not raise the file limit from %d to %d: %s", soft, hard, exc)
            return soft
    return hard


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    files = raise_file_limit()
    logging.getLogger(__name__).info("File limit %d: at most %d connections per worker", files,
                                     connection_cap(settings))  # fmt: skip
    # uvicorn re-raises the SIGTERM it handled once it has drained; turning that into SystemExit lets
    # the embedded database below be stopped instead of the process dying on the default handler.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with ExitStack() as stack:
        if settings.database_url is None:
            # One embedded database for the whole run; workers find it through the inherited variable.
            os.environ["DATABASE_URL"] = stack.enter_context(embedded_postgres(settings.data_dir))
        if settings.workers > 1:
            # Set before the workers start (and import prometheus_client): their metric values then live in files
            # there that any of them sums for a scrape. Emptied first: a previous run's counters are not ours.
            folder = prepare_multiprocess_dir(settings.data_dir)
            os.environ[MULTIPROC_ENV] = str(folder)
            stack.callback(remove_multiprocess_dir, folder)
        uvicorn.run(
            "collector.__main__:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            # httptools, plus a header size limit and a read deadline (collector/protocol.py).
            http=EdgeProtocol,
            lifespan="on",
            access_log=False,
            # X-Forwarded-For is judged by our own TRUSTED_PROXIES (collector/proxies.py); uvicorn's middleware
            # would parse addresses on every request for nothing.
            proxy_headers=False,
            log_config=None,
            timeout_graceful_shutdown=int(settings.drain_timeout_s),
        )


if __name__ == "__main__":
    main()
