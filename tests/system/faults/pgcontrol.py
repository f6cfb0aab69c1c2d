"""A PostgreSQL of the fault tests' own (pgserver), which they stop and start under the collector's feet."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
    warnings.simplefilter("ignore")
    import pgserver
    from pgserver.utils import PostmasterInfo


class StoppablePostgres:
    """One embedded server in `pgdata`, listening on a unix socket only (its directory is `socket_dir`).

    Started with the arguments pgserver itself uses (`-h ""`: no TCP; `-k`: the socket directory), so a restart
    serves the same URL. Running as root, pgserver runs the server as its own system user; pg_ctl must too.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        # cleanup_mode=None: the test owns this server and stops it itself (see collector/ops/embedded.py).
        self._server: Any = pgserver.get_server(pgdata, cleanup_mode=None)
        info = self._server.get_postmaster_info()
        self.socket_dir: Path = info.socket_dir
        self.port: int = info.port
        self.url: str = self._server.get_uri()
        self.log = pgdata / "log"

    @property
    def socket_path(self) -> Path:
        """The unix socket clients connect to (`<socket_dir>/.s.PGSQL.<port>`)."""
        return self.socket_dir / f".s.PGSQL.{self.port}"

    @property
    def running(self) -> bool:
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info is not None and info.is_running()

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast|immediate`, waiting until the server is gone."""
        self._pg_ctl(["-w", "-m", mode, "stop"])

    def start(self) -> None:
        """`pg_ctl start`, waiting until the server accepts connections (after crash recovery, if any)."""
        self._pg_ctl(["-w", "-o", f'-h "" -k {self.socket_dir}', "-l", str(self.log), "start"])

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def close(self) -> None:
        if self.running:
            try:
                self.stop("fast")
            except subprocess.CalledProcessError:
                self.stop("immediate")

    def _pg_ctl(self, args: list[str]) -> None:
        pgserver.pg_ctl(args, pgdata=self.pgdata, user=self._server.system_user, timeout=120)
