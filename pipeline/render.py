"""Render: what runs in the pipeline's worker process (pipeline.offload), on one raw object's bytes.

`scan` lists the object's (client, event id) pairs for processing to claim; `render_all` writes each client's
processed objects (one per receive day where the layout is partitioned by day). Both decode the object themselves,
so the process answering /collect only moves bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from collector.logsafe import for_log
from pipeline.clients import valid_client_id
from pipeline.formats import ObjectWriter, iter_events, open_writer
from pipeline.privacy import Policy

# Error texts kept of a failure (render errors here, retries in processing_retries).
MAX_ERROR_CHARS = 500

# One processed object as the worker process returns it: its bytes, its events and its sha256.
Rendered = tuple[bytes, int, str]
# Per client: its objects by day (one, under "", when the layout is not partitioned by day); or why it failed.
ClientRender = dict[str, Rendered] | str
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits only: it becomes a path segment


def event_day(event: dict[str, Any], default: str) -> str:
    """The UTC day (YYYY-MM-DD) the event was received, from export's received_at; `default` if it has none."""
    received = event.get("received_at")
    if type(received) is str and _DAY.fullmatch(received[:10]) and received.endswith("Z"):
        return received[:10]
    return default


def scan(fmt: str, body: bytes, only: set[str] | None) -> tuple[list[str], list[str], dict[str, int], int, int]:
    """The object's (client, event id) pairs, each once, as two parallel lists; unique
    pairs per client; events in scope; events of invalid client ids."""
    seen: set[tuple[str, str]] = set()
    clients: list[str] = []
    ids: list[str] = []
    per_client: Counter[str] = Counter()
    total = invalid = 0
    for event in iter_events(fmt, body, ["client_id", "event_id"]):
        client_id = event.get("client_id")
        if only is not None:
            if type(client_id) is not str or client_id not in only:
                continue
        elif not valid_client_id(client_id):
            invalid += 1
            continue
        total += 1
        pair = (str(client_id), str(event.get("event_id")))
        if pair not in seen:
            seen.add(pair)
            clients.append(pair[0])
            ids.append(pair[1])
            per_client[pair[0]] += 1
    return clients, ids, dict(per_client), total, invalid


def render_all(
    raw_fmt: str,
    body: bytes,
    fmt: str,
    default_day: str | None,
    only: set[str] | None,
    skip: set[tuple[str, str]],
    jobs: dict[str, tuple[dict[str, Any], Policy, Callable[[str], str]]],
) -> dict[str, ClientRender]:
    """Each client's processed objects in `fmt`: the first event of each of its (client, event id) pairs that
    `skip` (claimed by an earlier raw object) does not name, redacted under its policy and encoded one at a time,
    one object per receive day unless `default_day` is None (the day of events without a receive time). A client
    whose events fail to render gets the error's text instead; the others are unaffected."""
    writers: dict[str, dict[str, ObjectWriter]] = {client_id: {} for client_id in jobs}
    errors: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for event in iter_events(raw_fmt, body):
        client_id = event.get("client_id")
        if type(client_id) is not str or (days := writers.get(client_id)) is None:
            continue
        pair = (client_id, str(event.get("event_id")))
        if pair in seen or pair in skip:
            continue
        seen.add(pair)
        _, policy, hasher = jobs[client_id]
        day = "" if default_day is None else event_day(event, default_day)
        if (writer := days.get(day)) is None:
            writer = days[day] = open_writer(fmt, "process_metadata")
        try:
            writer.add_event(policy.apply(event, hasher))
        except Exception as exc:
            errors[client_id] = _error(exc)
            del writers[client_id]
    out: dict[str, ClientRender] = dict(errors)
    for client_id, days in writers.items():
        try:
            out[client_id] = _finish(days, jobs[client_id][0])
        except Exception as exc:  # typing a parquet column failed on this client's values: only this client's
            out[client_id] = _error(exc)
    return out


def _finish(days: dict[str, ObjectWriter], metadata: dict[str, Any]) -> dict[str, Rendered]:
    objects: dict[str, Rendered] = {}
    for day, writer in sorted(days.items()):
        data = writer.finish({**metadata, "event_count": writer.count, **({"date": day} if day else {})})
        objects[day] = (data, writer.count, hashlib.sha256(data).hexdigest())
    return objects


def _error(exc: BaseException) -> str:
    return for_log(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS)
