"""The locks in requirements/ agree with pyproject.toml and with each other, and `make sbom` lists what they pin.

pyproject.toml keeps compatible ranges (for whoever installs the package as a library); the locks are what this
repository runs and ships: `make run` installs requirements/run.txt, `make test`, lint, typecheck and CI
requirements/dev.txt, the image requirements/runtime.txt (tests/deploy/test_image_lock.py), all hash-checked.
`make lock` writes all three from pyproject.toml; these tests fail when someone changes one without the other.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Each lock and the extras of pyproject.toml it is made for (the Makefile's IMAGE_LOCK, RUN_LOCK and DEV_LOCK).
LOCKS: dict[str, tuple[str, ...]] = {
    "requirements/runtime.txt": ("parquet", "iceberg"),
    "requirements/run.txt": ("embedded",),
    "requirements/dev.txt": ("embedded", "dev"),
}
# uv's annotation for a package that pyproject.toml itself asks for.
PROJECT = f"{PYPROJECT['project']['name']} (pyproject.toml)"
_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?: ; (?P<marker>[^\\]+?))?(?: \\)?")


@dataclass
class Pin:
    """One entry of a lock: an exact version (under a marker, for a universal lock), its hashes and who asked."""

    name: str
    version: str
    marker: str | None
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)


def read_lock(relative: str) -> list[Pin]:
    """The entries of a lock that uv wrote; anything else than an exact pin (a range, a URL, -e) fails here."""
    pins: list[Pin] = []
    for line in (ROOT / relative).read_text().splitlines():
        text = line.strip()
        if not text or line.startswith("#"):
            continue
        if not line[0].isspace():
            match = _PIN.fullmatch(line)
            assert match, f"{relative}: not an exact pin: {line}"
            pins.append(Pin(canonicalize_name(match["name"]), match["version"], match["marker"]))
        elif text.startswith("--hash="):
            pins[-1].hashes.append(text.removeprefix("--hash=").removesuffix(" \\"))
        elif text.startswith("#"):
            who = text.lstrip("#").strip().removeprefix("via").strip()
            if who and not who.startswith("-c "):  # "-c requirements/dev.txt": the constraint, not a reason
                pins[-1].via.add(who)
    return pins


def asked_for(extras: tuple[str, ...]) -> list[Requirement]:
    """pyproject.toml's requirements for the package with these extras (those whose marker holds here)."""
    lines = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        lines += PYPROJECT["project"]["optional-dependencies"][extra]
    requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def test_every_requirement_of_pyproject_is_pinned_in_its_lock_at_a_version_it_accepts() -> None:
    """Each dependency of pyproject.toml, per extra, is in the lock made for that extra, at versions it allows."""
    problems = []
    for lock, extras in LOCKS.items():
        pins = read_lock(lock)
        for requirement in asked_for(extras):
            versions = [p.version for p in pins if p.name == canonicalize_name(requirement.name)]
            if not versions:
                problems.append(f"{lock}: {requirement} is not pinned")
            for version in versions:
                if not requirement.specifier.contains(version, prereleases=True):
                    problems.append(f"{lock}: {requirement.name}=={version} is outside {requirement}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_every_locked_package_is_asked_for_by_pyproject_or_by_another_locked_package() -> None:
    """Nothing top-level in a lock that pyproject.toml (with that lock's extras) does not ask for: every entry that
    says pyproject asked for it is a requirement there, and every other entry is a dependency of a locked package."""
    problems = []
    for lock, extras in LOCKS.items():
        pins = read_lock(lock)
        names = {p.name for p in pins}
        asked = {canonicalize_name(r.name) for r in asked_for(extras)}
        for pin in pins:
            if PROJECT in pin.via and pin.name not in asked:
                problems.append(f"{lock}: {pin.name} says pyproject.toml asks for it, which it does not")
            parents = {canonicalize_name(who) for who in pin.via - {PROJECT}}
            if not parents & names and PROJECT not in pin.via:
                problems.append(f"{lock}: {pin.name} is asked for by nothing locked ({sorted(pin.via)})")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_every_locked_package_has_an_exact_version_and_hashes() -> None:
    """Every entry of every lock is name==version with at least one sha256 hash, so pip's --require-hashes holds."""
    for lock in LOCKS:
        pins = read_lock(lock)
        assert len(pins) > 10, lock
        unhashed = [p.name for p in pins if not p.hashes or not all(h.startswith("sha256:") for h in p.hashes)]
        assert not unhashed, f"{lock}: no sha256 hash for {unhashed}"


def test_the_image_and_make_run_get_the_versions_that_the_tests_ran() -> None:
    """The image's lock and make run's are within the test toolchain's, at the same versions."""
    runtime, run, dev = (read_lock(lock) for lock in LOCKS)
    for smaller, larger, label in ((runtime, dev, "runtime.txt in dev.txt"), (run, dev, "run.txt in dev.txt")):
        pinned = {(p.name, p.version) for p in larger}
        missing = sorted(f"{p.name}=={p.version}" for p in smaller if (p.name, p.version) not in pinned)
        assert not missing, f"{label}: {missing} (run `make lock`)"


def _sbom_command(output: Path) -> list[str]:
    """`make sbom`'s generator command as the Makefile writes it (make -n prints it), run with this Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    dry = subprocess.run(
        ["make", "-n", "sbom", f"SBOM={output}"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    lines = dry.stdout.replace("\\\n", " ").splitlines()
    generator = [line for line in lines if "cyclonedx_py" in line]
    assert len(generator) == 1, dry.stdout
    argv = shlex.split(generator[0])
    assert argv[0].endswith("/bin/python"), argv
    return [sys.executable, *argv[1:]]


def test_make_sbom_lists_every_package_of_the_image_lock(tmp_path: Path) -> None:
    """`make sbom`'s CycloneDX document names the collector at pyproject's version and every package of the image's
    lock at its locked version with its hashes, and nothing else."""
    output = tmp_path / "sbom.cdx.json"
    run = subprocess.run(_sbom_command(output), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stderr, run.stderr
    document = json.loads(output.read_text())
    assert document["bomFormat"] == "CycloneDX"
    root = document["metadata"]["component"]
    assert (root["name"], root["version"]) == (PYPROJECT["project"]["name"], PYPROJECT["project"]["version"])
    listed = {(canonicalize_name(c["name"]), c["version"]) for c in document["components"]}
    locked = read_lock("requirements/runtime.txt")
    assert listed == {(p.name, p.version) for p in locked}
    for component in document["components"]:
        listed_hashes = {h["content"] for ref in component.get("externalReferences", []) for h in ref.get("hashes", [])}
        pin = next(p for p in locked if p.name == canonicalize_name(component["name"]))
        assert listed_hashes == {h.removeprefix("sha256:") for h in pin.hashes}, pin.name
