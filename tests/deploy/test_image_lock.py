"""deploy/Dockerfile installs the image's Python packages from requirements/runtime.txt, hash-checked, and nothing
else resolves a dependency at build time (Docker cannot run here: the file is parsed)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath

from tests.deploy.test_compose import dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
IMAGE_LOCK = "requirements/runtime.txt"


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, one list per FROM."""
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in dockerfile_instructions():
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, args))
    return stages


def _pip_installs(stage: list[tuple[str, str]]) -> list[list[str]]:
    """Each `pip install` command of the RUNs of a stage, split into words."""
    commands = [shlex.split(part) for ins, args in stage if ins == "RUN" for part in re.split(r"&&|;", args)]
    return [argv for argv in commands if "install" in argv and "pip" in " ".join(argv[: argv.index("install")])]


def _makefile_variable(name: str) -> str:
    match = re.search(rf"^{name} := (\S+)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert match, f"Makefile sets no {name}"
    return match.group(1)


def test_the_image_installs_its_dependencies_from_the_runtime_lock_with_hashes() -> None:
    """The build stage copies requirements/runtime.txt and installs it with --require-hashes; every other pip install
    is the project with --no-deps; no pip wheel or download resolves anything; the final stage takes that venv."""
    build, final = _stages()[0], _stages()[-1]
    workdir = PurePosixPath(next(args for ins, args in build if ins == "WORKDIR"))
    copies = [args.split() for ins, args in build if ins == "COPY" and args.split()[0] == IMAGE_LOCK]
    assert copies, f"the build stage does not COPY {IMAGE_LOCK}"
    in_image = {workdir / copy[-1] for copy in copies}  # where the COPY put it (relative to WORKDIR)
    installs = _pip_installs(build)
    from_lock = [argv for argv in installs if "-r" in argv and workdir / argv[argv.index("-r") + 1] in in_image]
    assert from_lock and all("--require-hashes" in argv for argv in from_lock), installs
    others = [argv for argv in installs if argv not in from_lock]
    assert others and all("--no-deps" in argv and "-r" not in argv for argv in others), others
    runs = " ".join(args for stage in _stages() for ins, args in stage if ins == "RUN")
    assert not re.search(r"pip3? (wheel|download)", runs), runs
    assert not _pip_installs(final), "the final stage must not install: it copies the build stage's venv"
    venv = next(args.split()[-1] for ins, args in final if ins == "COPY" and args.startswith("--from=build"))
    assert any(ins == "ENV" and f"PATH={venv}/bin:" in args for ins, args in final), final
    assert all(argv[0] in (f"{venv}/bin/pip", f"{venv}/bin/python") for argv in installs), installs


def test_the_runtime_lock_reaches_the_build_context_and_is_the_makefiles_image_lock() -> None:
    """requirements/runtime.txt exists, .dockerignore keeps it in the context, and the Makefile's IMAGE_LOCK is it."""
    assert (ROOT / IMAGE_LOCK).is_file()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"requirements", "requirements/", "*.txt", "requirements/*"} & set(ignored)
    assert _makefile_variable("IMAGE_LOCK") == IMAGE_LOCK


def test_the_runtime_lock_is_resolved_for_the_images_python() -> None:
    """Every stage's python:X.Y base is the Python the Makefile resolves the locks for (LOCK_PYTHON), on Linux."""
    lock_python = _makefile_variable("LOCK_PYTHON")
    bases = [stage[0][1].split()[0] for stage in _stages()]
    assert bases and all(base == f"python:{lock_python}-slim" for base in bases), (bases, lock_python)
    image_lock_line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "-o $(IMAGE_LOCK)" in line)
    assert "--python-platform linux" in image_lock_line
