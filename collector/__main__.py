"""Entry point: read Settings once, configure logging, start the embedded database if needed, run uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.supervisors import Multiprocess

from collector import __version__
from collector.edge.protocol import EdgeProtocol, connection_cap
from collector.ops.embedded import embedded_postgres
from collector.ops.metrics import MULTIPROC_ENV, prepare_multiprocess_dir, remove_multiprocess_dir
from collector.settings import Settings, SettingsError

if TYPE_CHECKING:
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


class Supervisor(Multiprocess):
    """uvicorn's supervisor of WORKERS>1, except that SIGHUP stops it like SIGTERM instead of replacing the workers.

    Closing the terminal sends SIGHUP to the whole job: the workers drain and stop (see worker_app), and a
    supervisor that started new ones would keep serving with no terminal and the embedded database never stopped.
    """

    def handle_hup(self) -> None:
        logging.getLogger("uvicorn.error").info("Received SIGHUP, exiting.")
        self.should_exit.set()


def serve(config: uvicorn.Config) -> None:
    """uvicorn.run's single and multi-process paths, with our Supervisor for the latter."""
    if config.workers > 1:
        sock = config.bind_socket()
        try:
            Supervisor(config, sockets=[sock]).run()
        finally:
            sock.close()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE: the app, or the socket, failed before serving


def parse_arguments(argv: list[str]) -> None:
    """The command line: --version and --help only; everything else is configured by environment variables."""
    parser = argparse.ArgumentParser(
        prog="python -m collector",
        description="The Collection API collector. Configured by environment variables: see docs/configuration.md.",
    )
    # The package metadata's version (pyproject.toml), as GET /, /openapi.json and collector_build_info show it.
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)


def main() -> None:
    parse_arguments(sys.argv[1:])  # before any setting is read: --version answers whatever the environment holds
    settings = load_settings()
    configure_logging(settings.log_level)
    # Imported here: the supervising parent of WORKERS>1 keeps no directory client (aiohttp) in its memory.
    from collector.ingest.directories import check_directory

    try:
        check_directory(settings)
    except ValueError as exc:
        print(f"collector: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    files = raise_file_limit()
    logging.getLogger(__name__).info("File limit %d: at most %d connections per worker", files,
                                     connection_cap(settings))  # fmt: skip
    # uvicorn re-raises the SIGINT or SIGTERM it handled once it has drained (and before it serves, nothing handles
    # them): turning them into SystemExit lets the embedded database below be stopped instead of the process dying on
    # the default handler. SIGHUP (a closed terminal) takes the same way; see _hang_up and Supervisor.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit)
    signal.signal(signal.SIGHUP, _hang_up)
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
        config = uvicorn.Config(
            "collector.__main__:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            # httptools, plus a header size limit, read and idle deadlines and a connection cap (collector/edge/
            # protocol.py); each connection takes them from the Edge the app's lifespan yields.
            http=EdgeProtocol,
            lifespan="on",
            access_log=False,
            # X-Forwarded-For is judged by our own TRUSTED_PROXIES (collector/ingest/proxies.py); uvicorn's middleware
            # would parse addresses on every request for nothing.
            proxy_headers=False,
            log_config=None,
            timeout_graceful_shutdown=settings.connection_drain_s,
        )
        serve(config)


if __name__ == "__main__":
    main()
