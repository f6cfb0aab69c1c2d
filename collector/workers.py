"""The parent of WORKERS>1: binds the port once, runs each worker as a `python -m collector` process serving that
socket, replaces a worker that dies, and stops them all on SIGINT, SIGTERM or SIGHUP.

Not uvicorn's supervisor: that one spawns workers through multiprocessing, which starts a resource-tracker process
(12 MB) and a ping thread in every worker, and it needs uvicorn (with asyncio and ssl, 26 MB) imported in a parent
that never serves. This parent imports neither: docs/scaling.md has the memory before and after.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

logger = logging.getLogger(__name__)

# What a worker exits with when its app or its socket failed before serving (uvicorn's STARTUP_FAILURE): another
# start would fail the same way, so the parent stops instead of restarting it forever.
STARTUP_FAILURE = 3
POLL_S = 0.2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """The one listening socket every worker accepts on (SO_REUSEADDR, as uvicorn binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def worker_command(fd: int) -> list[str]:
    """How a worker is started: this interpreter, this package, the inherited socket's descriptor."""
    return [sys.executable, "-m", "collector", "--worker-fd", str(fd)]


class Workers:
    """`count` worker processes sharing `sock`; `run()` watches them until asked to stop.

    A closed terminal (SIGHUP) stops the service like SIGTERM does, rather than replacing the workers as uvicorn's
    supervisor did: a parent that started new ones would keep serving with no terminal, and the embedded database
    it started would never be stopped.
    """

    def __init__(self, count: int, sock: socket.socket) -> None:
        self.count = count
        self.sock = sock
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stop_signal: int | None = None

    def run(self) -> int:
        """Start the workers, replace any that dies, and on a stop signal send each SIGTERM and wait for it to
        drain (each worker bounds its own drain). Returns the exit status: 0, or STARTUP_FAILURE when a worker
        could not start."""
        previous = {signum: signal.signal(signum, self._stop) for signum in STOP_SIGNALS}
        status = 0
        try:
            self.processes = [self._start() for _ in range(self.count)]
            logger.info("Started parent process [%d] with %d workers", os.getpid(), self.count)
            while self.stop_signal is None and status == 0:
                time.sleep(POLL_S)
                status = self._replace_dead()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        logger.info("Stopping parent process [%d]", os.getpid())
        return status

    def _start(self) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        return subprocess.Popen(worker_command(fd), pass_fds=(fd,))

    def _replace_dead(self) -> int:
        for index, process in enumerate(self.processes):
            code = process.poll()
            if code is None:
                continue
            if code == STARTUP_FAILURE:
                logger.error("Worker [%d] failed to start; stopping the service", process.pid)
                return STARTUP_FAILURE
            if self.stop_signal is not None:
                return 0
            logger.warning("Worker [%d] exited with status %d; starting another", process.pid, code)
            self.processes[index] = self._start()
        return 0

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        logger.info("Received %s, stopping the workers", signal.Signals(signum).name)
        self.stop_signal = signum

    def _stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait()
