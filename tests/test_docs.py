"""The README is a front page whose examples hold; docs/ agrees with Settings and /openapi.json; every link resolves."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from collector.edge.openapi import document
from collector.ingest.auth import DEFAULT_DOMAINS_FILE
from collector.settings import Settings
from tests.conftest import MakeApp

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 150
README_MAX_BYTES = 12 * 1024


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|")
_ENDPOINT = re.compile(r"\b(GET|POST|OPTIONS|HEAD|PUT|PATCH|DELETE) (/[^\s`,)]*)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_readme_is_a_front_page_of_at_most_150_lines() -> None:
    """README.md stays a front page: at most 150 lines and 12 KB, the reference living in docs/."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    assert len(text.encode()) <= README_MAX_BYTES, f"README.md has {len(text.encode())} bytes"
    for page in ("configuration.md", "api.md", "architecture.md", "migrating.md"):
        assert f"docs/{page}" in text, f"README.md does not link docs/{page}"


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    """Each relative link of README.md and docs/*.md names a file that exists, and an anchor that its page has."""
    broken = []
    for page in _markdown_files():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _render(value: Any) -> str | None:
    """A default as docs/configuration.md writes it; None for "unset" (no value)."""
    if value is None or value in ((), ""):
        return None
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):  # a comma list (PROTOCOLS)
        return ",".join(map(str, value))
    return str(value).lower()


def _documented_settings() -> dict[str, tuple[str | None, str]]:
    """Variable → the default docs/configuration.md gives (the first `code` of its cell; None when it says unset), and
    the heading its row sits under."""
    found: dict[str, tuple[str | None, str]] = {}
    heading = ""
    for line in (DOCS / "configuration.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        match = _ROW.match(line)
        if match:
            name, cell = match.groups()
            assert name not in found, f"{name} is documented twice"
            code = re.match(r"\s*`([^`]*)`", cell)
            found[name] = (code.group(1).lower() if code else None, heading)
            if code is None:
                assert re.match(r"\s*(unset|none)\b", cell), f"{name}: default {cell!r} is neither `value` nor unset"
    return found


def test_configuration_page_documents_exactly_the_variables_read_with_their_defaults() -> None:
    """docs/configuration.md has one row per variable Settings.from_env reads (a bucket's included; no stale rows),
    each with its default."""
    documented = {name: default for name, (default, _) in _documented_settings().items()}
    defaults = {variable.name: variable.default for variable in Settings.variables()}
    assert all(default is not MISSING for default in defaults.values())

    undocumented = set(defaults) - set(documented)
    assert not undocumented, f"variables missing from docs/configuration.md: {sorted(undocumented)}"
    stale = set(documented) - set(defaults)
    assert not stale, f"docs/configuration.md documents variables Settings does not read: {sorted(stale)}"

    wrong = []
    for name, default in defaults.items():
        if documented[name] != _render(default):
            wrong.append(f"{name}: documented {documented[name]!r}, Settings has {_render(default)!r}")
    assert not wrong, "\n".join(wrong)


def test_configuration_page_shows_each_bucket_as_one_group_under_its_prefix() -> None:
    """Each bucket's variables (RAW_S3_*, PROCESSED_S3_*) sit together under one heading naming the prefix, and
    nothing else does."""
    documented = _documented_settings()
    groups: dict[str, set[str]] = {}
    for variable in Settings.variables():
        if variable.prefix:
            groups.setdefault(variable.prefix, set()).add(variable.name)
    assert set(groups) == {"RAW_S3_", "PROCESSED_S3_"}
    for prefix, names in groups.items():
        headings = {documented[name][1] for name in names}
        assert len(headings) == 1, f"{sorted(names)} are under {sorted(headings)}"
        heading = headings.pop()
        assert f"`{prefix}*`" in heading, f"the heading {heading!r} of {sorted(names)} does not name {prefix}*"
        assert {name for name, (_, under) in documented.items() if under == heading} == names


def test_api_page_documents_exactly_the_operations_of_openapi_json() -> None:
    """docs/api.md has a heading for every method and path /openapi.json describes, and for nothing else."""
    described = {
        (method.upper(), path) for path, item in document(Settings()).get("paths", {}).items() for method in item
    }
    headings = [line for line in (DOCS / "api.md").read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    documented = {(method, path) for line in headings for method, path in _ENDPOINT.findall(line)}

    assert not described - documented, f"missing from docs/api.md: {sorted(described - documented)}"
    assert not documented - described, f"not in /openapi.json: {sorted(documented - described)}"


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_readme_pixel_example_uses_a_domain_that_make_run_authorizes() -> None:
    """The README's pixel <img> names a siteId that `make run`'s default domains file authorizes."""
    text = README.read_text(encoding="utf-8")
    sites = re.findall(r"<img src=\"[^\"]*[?&]siteId=([^&\"]+)", text)
    assert sites, "the README shows no pixel example"
    authorized = json.loads(DEFAULT_DOMAINS_FILE.read_text(encoding="utf-8"))
    assert all(site in authorized for site in sites), sites


async def test_readme_sample_answer_is_what_its_commands_get(make_app: MakeApp) -> None:
    """The `Try it` commands, sent to a collector authorizing as `make run` does, get the sample answer shown."""
    section = _section(README.read_text(encoding="utf-8"), "Try it")
    commands = [
        shlex.split(block.replace("\\\n", " "))
        for block in re.findall(r"^curl -X POST .*?(?=\n\n|\n#|\n```)", section, flags=re.M | re.S)
    ]
    assert commands, "no curl -X POST in the README's Try it section"
    sample = json.loads(re.findall(r"```json\n(.*?)```", section, flags=re.S)[0])
    # The development domains file, as `make run`; on loopback, as the README's curl (admin endpoints answer it).
    running = await make_app(client_host="127.0.0.1", pixel_management_url=None)

    answers = []
    for argv in commands:
        body = argv[argv.index("-d") + 1]
        path = next(arg for arg in argv if arg.startswith("http")).split("8000", 1)[1]
        answers.append(await running.client.post(path, content=body, headers={"content-type": "application/json"}))
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]

    last = answers[-1].json()
    assert set(sample) == set(last), f"sample keys {sorted(sample)}, answer keys {sorted(last)}"
    for key in ("status", "events_processed", "client_id"):
        assert sample[key] == last[key], key
    assert sample["message"] == last["message"]

    await running.services.buffer.drain()
    shown = re.search(r'/events/count .*"total_events": (\d+)', section)
    assert shown, "the Try it section shows no /events/count answer"
    assert (await running.client.get("/events/count")).json()["total_events"] == int(shown.group(1))


async def test_readme_export_example_holds_whether_or_not_the_schedule_ran_first(make_app: MakeApp) -> None:
    """`/export/run` then `/export/status` shows nothing pending, whether the run or the schedule exported the rows."""
    section = _section(README.read_text(encoding="utf-8"), "The pipeline")
    assert "/export/run" in section and '"pending_events": 0' in section
    running = await make_app(client_host="127.0.0.1", pixel_management_url=None)
    assert (await running.post({"eventType": "pageview", "siteId": "localhost"})).status_code == 200
    await running.services.buffer.drain()

    for _ in range(2):  # the second run finds what the first (the schedule, say) left: nothing
        export = await running.client.post("/export/run")
        assert export.status_code == 200 and export.json()["status"] == "success", export.text
        assert (await running.client.post("/process/run")).status_code == 200
        status = (await running.client.get("/export/status")).json()
        assert status["pending_events"] == 0 and status["exported_events"] == 1
