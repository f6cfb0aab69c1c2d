"""Entry point: read Settings once, configure logging, start the embedded database if needed, run uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import socket
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING

from collector import __version__
from collector.ops.metricsdir import MULTIPROC_ENV, prepare_multiprocess_dir, remove_multiprocess_dir
from collector.settings import Settings, SettingsError

if TYPE_CHECKING:
    import uvicorn

    from collector.app import CollectorApp

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
    # Imported here, not at the top: the supervising parent of WORKERS>1 never serves, and without the app's
    # modules it stays a few MB instead of a worker's size.
    from collector.app import create_app

    # uvicorn drains on SIGINT and SIGTERM only; a closed terminal sends SIGHUP to every process of the job.
    signal.signal(signal.SIGHUP, _hang_up)
    settings = load_settings()
    configure_logging(settings.log_level)
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


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _hang_up(signum: int, frame: object) -> None:
    """SIGHUP (the terminal closed) stops the process as SIGTERM does: whoever handles SIGTERM now drains."""
    signal.raise_signal(signal.SIGTERM)


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """How uvicorn serves the app, in the one process of WORKERS=1 or in each worker."""
    # Imported here: the parent of WORKERS>1 never serves, and without uvicorn (and asyncio, ssl) it stays small.
    import uvicorn

    from collector.edge.protocol import EdgeProtocol

    return uvicorn.Config(
        "collector.__main__:worker_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools, plus a header size limit, read and idle deadlines and a connection cap (collector/edge/
        # protocol.py); each connection takes them from the Edge the app's lifespan yields.
        http=EdgeProtocol,
        lifespan="on",
        access_log=False,
        # X-Forwarded-For is judged by our own TRUSTED_PROXIES (collector/ingest/proxies.py); uvicorn's middleware
        # would parse addresses on every request for nothing.
        proxy_headers=False,
        # No "server: uvicorn" on every answer: it tells a scanner what to try, and costs each answer a header.
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=settings.connection_drain_s,
    )


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve in this process: on `sock` (a worker's inherited socket) or on a socket uvicorn binds."""
    import uvicorn

    from collector.edge.protocol import connection_cap

    files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    logging.getLogger(__name__).info("File limit %d: at most %d connections in this process", files,
                                     connection_cap(settings))  # fmt: skip
    server = uvicorn.Server(uvicorn_config(settings))
    server.run(sockets=None if sock is None else [sock])
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE: the app, or the socket, failed before serving


def serve_workers(settings: Settings) -> None:
    """WORKERS>1: this process binds the port and supervises; each worker serves (collector/workers.py)."""
    from collector.workers import Workers, listen

    with listen(settings.host, settings.port, backlog=2048) as sock:
        logging.getLogger(__name__).info("Listening on http://%s:%d", settings.host, settings.port)
        status = Workers(settings.workers, sock).run()
    if status:
        raise SystemExit(status)


def parse_arguments(argv: list[str]) -> int | None:
    """The command line: --version and --help; everything else is configured by environment variables.

    Returns the listening socket's descriptor when this process is a worker of WORKERS>1 (collector/workers.py
    starts it with the hidden --worker-fd), else None.
    """
    parser = argparse.ArgumentParser(
        prog="python -m collector",
        description="The Collection API collector. Configured by environment variables: see docs/configuration.md.",
    )
    # The package metadata's version (pyproject.toml), as GET /, /openapi.json and collector_build_info show it.
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    worker_fd: int | None = parser.parse_args(argv).worker_fd
    return worker_fd


def main() -> None:
    # Before any setting is read: --version answers whatever the environment holds.
    worker_fd = parse_arguments(sys.argv[1:])
    settings = load_settings()
    configure_logging(settings.log_level)
    # uvicorn re-raises the SIGINT or SIGTERM it handled once it has drained (and before it serves, nothing handles
    # them): turning them into SystemExit lets the embedded database below be stopped instead of the process dying on
    # the default handler. SIGHUP (a closed terminal) takes the same way: see _hang_up, worker_app and Workers.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit)
    signal.signal(signal.SIGHUP, _hang_up)
    if worker_fd is not None:
        # A worker of WORKERS>1: the parent checked the settings, raised the file limit, started the database and
        # prepared the metrics folder; its environment (DATABASE_URL, the metrics folder) is inherited.
        serve(settings, socket.socket(fileno=worker_fd))
        return
    # Imported here: the supervising parent of WORKERS>1 keeps no directory client (aiohttp) in its memory.
    from collector.ingest.directories import check_directory

    try:
        check_directory(settings)
    except ValueError as exc:
        print(f"collector: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise_file_limit()
    with ExitStack() as stack:
        if settings.database_url is None:
            from collector.ops.embedded import embedded_postgres  # pgserver: only when no DATABASE_URL is given

            # One embedded database for the whole run; workers find it through the inherited variable.
            os.environ["DATABASE_URL"] = stack.enter_context(embedded_postgres(settings.data_dir))
        if settings.workers > 1:
            # Set before the workers start (and import prometheus_client): their metric values then live in files
            # there that any of them sums for a scrape. Emptied first: a previous run's counters are not ours.
            folder = prepare_multiprocess_dir(settings.data_dir)
            os.environ[MULTIPROC_ENV] = str(folder)
            stack.callback(remove_multiprocess_dir, folder)
            serve_workers(settings)
        else:
            serve(settings)


if __name__ == "__main__":
    main()
