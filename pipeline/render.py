"""Render: what runs in the pipeline's worker process (pipeline.offload), on one raw object's bytes.

`scan` lists the object's (client, event id) pairs for processing to claim; `render_all` writes each client's
processed object. Both decode the object themselves, so the process answering /collect only moves bytes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from collector.logsafe import for_log
from pipeline.clients import valid_client_id
from pipeline.formats import ObjectWriter, iter_events
from pipeline.privacy import Policy

# Error texts kept of a failure (render errors here, retries in processing_retries).
MAX_ERROR_CHARS = 500

# What the worker process returns per client: the object's bytes, its events and its sha256; or why it failed.
Rendered = tuple[bytes, int, str]


def scan(fmt: str, body: bytes, only: set[str] | None) -> tuple[list[str], list[str], dict[str, int], int, int]:
    """The object's (client, event id) pairs, each once, as two parallel lists; unique
    pairs per client; events in scope; events of invalid client ids."""
    seen: set[tuple[str, str]] = set()
    clients: list[str] = []
    ids: list[str] = []
    per_client: Counter[str] = Counter()
    total = invalid = 0
    for event in iter_events(fmt, body):
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
    fmt: str,
    body: bytes,
    only: set[str] | None,
    skip: set[tuple[str, str]],
    jobs: dict[str, tuple[dict[str, Any], Policy, Callable[[str], str]]],
) -> dict[str, Rendered | str]:
    """Each client's processed object: the first event of each of its (client, event id)
    pairs that `skip` (claimed by an earlier raw object) does not name, redacted under its policy and encoded one
    at a time. A client whose events fail to render gets the error's text instead; the others are unaffected."""
    writers = {client_id: ObjectWriter(fmt, "process_metadata") for client_id in jobs}
    errors: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for event in iter_events(fmt, body):
        client_id = event.get("client_id")
        if type(client_id) is not str or (writer := writers.get(client_id)) is None:
            continue
        pair = (client_id, str(event.get("event_id")))
        if pair in seen or pair in skip:
            continue
        seen.add(pair)
        _, policy, hasher = jobs[client_id]
        try:
            writer.add(orjson.dumps(policy.apply(event, hasher)))
        except Exception as exc:
            errors[client_id] = for_log(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS)
            del writers[client_id]
    out: dict[str, Rendered | str] = dict(errors)
    for client_id, writer in writers.items():
        metadata = jobs[client_id][0]
        metadata["event_count"] = writer.count
        data = writer.finish(metadata)
        out[client_id] = (data, writer.count, hashlib.sha256(data).hexdigest())
    return out
