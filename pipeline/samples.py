"""Dead-letter samples through the strictest privacy rules before the collector writes them.

The collector's accounting (collector.storage.accounting) takes this function as its `redact` argument from the
composition root (collector.app): the storage floor never imports the pipeline, whose rules it borrows.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.privacy import Policy

# Whose sample it is may be unknown (the site was refused), so every sample gets the strictest redaction.
SAMPLE_PRIVACY_LEVEL = "hipaa"
SAMPLE_STRING_CHARS = 1024
_SAMPLE_POLICY = Policy.for_level(SAMPLE_PRIVACY_LEVEL)


def redact_sample(text: str) -> str:
    """A sample through the same redaction as processed output: a whole JSON value by its keys and values,
    anything else (a cut or malformed body) as text. Bounded: accounting cut the text to PAYLOAD_SAMPLE_BYTES."""
    policy = _SAMPLE_POLICY
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return policy.clean_text(_cut(text))
    return orjson.dumps(policy.clean(_cut(value))).decode()


def _cut(value: Any) -> Any:
    """`value` with every string cut to SAMPLE_STRING_CHARS before redaction (which keeps no more than ~1,000
    characters of a string anyway): patterns then never run over a long string."""
    kind = type(value)
    if kind is str:
        return value[:SAMPLE_STRING_CHARS]
    if kind is dict:
        return {k: _cut(v) for k, v in value.items()}
    if kind is list:
        return [_cut(v) for v in value]
    return value
