"""What `make run` installs and says: the runtime and the embedded database only, from their lock
(requirements/run.txt), without a warning that reads like an error, and a word when an existing .venv is of another
Python than PYTHON= asks for.

The long variants (INSTALL_LONG=1 pytest tests/system/test_install.py -s) measure a cold `make run` (seconds to the
first 200 on /health, venv size) and install the image's lock twice into fresh venvs to compare the package sets.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def _copy_of_the_repository(target: Path) -> Path:
    """The tracked files as they are in the work tree (a fresh clone's view, without .venv or .data)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _make(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _pip_installs(dry_run: str) -> list[str]:
    return [line for line in dry_run.splitlines() if "pip install" in line]


def test_make_run_installs_the_run_lock_only_and_make_test_adds_the_dev_lock(tmp_path: Path) -> None:
    """A fresh `make run` installs requirements/run.txt hash-checked, then the project without dependencies, and says
    what; `make test` adds requirements/dev.txt. Nothing is resolved at install time."""
    run = _make("-n", "run", f"VENV={tmp_path / 'venv'}")
    assert run.returncode == 0, run.stderr
    installs = _pip_installs(run.stdout)
    assert len(installs) == 2, run.stdout
    assert installs[0].endswith("--require-hashes -r requirements/run.txt"), installs
    assert installs[1].endswith("--no-deps -e ."), installs
    assert "Installing the collector's runtime" in run.stdout and "--quiet" not in run.stdout
    test = _make("-n", "test", f"VENV={tmp_path / 'venv'}")
    installs = _pip_installs(test.stdout)
    assert installs[-1].endswith("--require-hashes -r requirements/dev.txt"), test.stdout
    assert all("--require-hashes -r requirements/" in line or "--no-deps -e ." in line for line in installs), installs


def test_a_changed_lock_reinstalls_at_the_next_make(tmp_path: Path) -> None:
    """With both stamps fresh nothing is installed; a newer requirements/run.txt reinstalls it for `make run`, a
    newer requirements/dev.txt reinstalls the toolchain for `make lint`."""
    repo = _copy_of_the_repository(tmp_path / "repo")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    later = time.time() + 60
    for stamp in (".installed-runtime", ".installed-dev"):
        (venv / stamp).touch()
        os.utime(venv / stamp, (later, later))
    fresh = _make("-n", "run", "lint", f"VENV={venv}", cwd=repo)
    assert fresh.returncode == 0 and "ruff check" in fresh.stdout, fresh.stdout + fresh.stderr
    assert not _pip_installs(fresh.stdout), fresh.stdout
    os.utime(repo / "requirements" / "dev.txt", (later + 60, later + 60))
    installs = _pip_installs(_make("-n", "run", "lint", f"VENV={venv}", cwd=repo).stdout)
    assert installs and all("requirements/dev.txt" in line for line in installs), installs
    os.utime(repo / "requirements" / "run.txt", (later + 60, later + 60))
    installs = _pip_installs(_make("-n", "run", f"VENV={venv}", cwd=repo).stdout)
    assert any("requirements/run.txt" in line for line in installs), installs


def test_the_editable_install_shows_no_setuptools_warning(tmp_path: Path) -> None:
    """Installing the repository editable (as `make run` does) raises no boxed setuptools warning."""
    source = _copy_of_the_repository(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = subprocess.run(
        # -v: a recent pip shows the build backend's warnings, an older one only in verbose mode.
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-v",
         "--disable-pip-version-check", "--no-deps", "-e", str(source)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = install.stdout + install.stderr
    assert install.returncode == 0, output
    assert "Successfully installed collection-api" in output
    assert "Please be careful" not in output and "*****" not in output, output


def _another_python() -> str | None:
    """A Python 3.11+ of another minor version than this one, if the machine has one."""
    names = [f"python3.{minor}" for minor in range(11, 16)]
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    candidates = [shutil.which(name) for name in names] + pyenv
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] >= (3, 11), sys.version_info[:2])"],
            capture_output=True, text=True,
        )  # fmt: skip
        ok, _, version = probe.stdout.partition(" ")
        if probe.returncode == 0 and ok == "True" and version.strip() != str(sys.version_info[:2]):
            return candidate
    return None


def test_make_run_says_so_when_the_venv_is_of_another_python(tmp_path: Path) -> None:
    """`PYTHON=python3.X make run` with a .venv of another Python stops with a message saying which and what to do."""
    other = _another_python()
    if other is None:
        pytest.skip("no second Python 3.11+ on this machine")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    run = _make("run", f"PYTHON={other}", f"VENV={venv}")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"was made with Python {sys.version_info[0]}.{sys.version_info[1]}" in output, output
    assert f"rm -rf {venv}" in output
    assert not (venv / ".installed-runtime").exists()


@pytest.mark.skipif(not os.environ.get("INSTALL_LONG"), reason="long variant: INSTALL_LONG=1")
@pytest.mark.timeout(600)
def test_cold_make_run_serves_within_its_budget(tmp_path: Path) -> None:
    """A cold `make run` (no .venv) answers 200 on /health within 45 s, with a venv of at most 250 MB; prints both."""
    repo = _copy_of_the_repository(tmp_path / "repo")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "DATABASE_URL", "MAKEFLAGS", "MAKELEVEL")}
    start = time.monotonic()
    with (repo / "make-run.log").open("wb") as log:
        make = subprocess.Popen(
            ["make", "run"], cwd=repo, env={**env, "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            while True:
                assert make.poll() is None, (repo / "make-run.log").read_text()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    time.sleep(0.2)
            seconds = time.monotonic() - start
        finally:
            os.killpg(make.pid, signal.SIGHUP)  # the terminal closes
            make.wait(60)
    venv_bytes = sum(f.stat().st_size for f in (repo / ".venv").rglob("*") if f.is_file() and not f.is_symlink())
    print(f"FIGURE cold make run: first 200 on /health after {seconds:.1f} s, venv {venv_bytes / 2**20:.0f} MB")
    assert seconds <= 45 and venv_bytes <= 250 * 2**20
    assert "Stopped embedded PostgreSQL" in (repo / "make-run.log").read_text()


@pytest.mark.skipif(not os.environ.get("INSTALL_LONG"), reason="long variant: INSTALL_LONG=1")
@pytest.mark.timeout(900)
def test_two_clean_installs_from_the_lock_have_the_same_packages(tmp_path: Path) -> None:
    """Two fresh venvs, each given requirements/runtime.txt (hash-checked, no cache), freeze to the same list."""
    frozen = []
    for name in ("a", "b"):
        venv = tmp_path / name
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        subprocess.run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir", "--quiet",
             "--require-hashes", "-r", str(ROOT / "requirements" / "runtime.txt")],
            check=True, timeout=600,
        )  # fmt: skip
        freeze = subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True)
        frozen.append(freeze.stdout.splitlines())
    print(f"FIGURE two clean installs of requirements/runtime.txt: {len(frozen[0])} packages each")
    assert frozen[0] == frozen[1]
    assert len(frozen[0]) > 30
