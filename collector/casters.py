"""Casters: from a settings field's type, the function that reads its environment variable.

A Literal is one of its values, int / float / str are themselves, tuple[str, ...] a comma list, tuple[Network, ...]
a comma list of addresses or CIDRs, `X | None` the caster of X, and `Annotated[str, caster]` a field's own
validation (URLs, paths, log level). A field `Annotated[SomeDataclass, EnvPrefix("RAW_S3_")]` is a group: its
dataclass's fields are read from that prefix. Each caster raises ValueError saying what it expected.
"""

from __future__ import annotations

import ipaddress
import types
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _as_str(raw: str) -> str:
    return raw


def _as_int(raw: str) -> int:
    return int(raw.replace("_", ""))


def _as_float(raw: str) -> float:
    value = float(raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {raw!r}")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def cast(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return cast


def _networks(raw: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _path(raw: str) -> str:
    if not raw.startswith("/") or len(raw) < 2 or any(c in raw for c in "?#% "):
        raise ValueError("expected an absolute URL path such as /e")
    return raw


def _database_url(raw: str) -> str:
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected a postgresql:// URL")
    return raw


def _http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def _log_level(raw: str) -> str:
    return _one_of("debug", "info", "warning", "error")(raw).upper()


HttpUrl = Annotated[str, _http_url]
PostgresUrl = Annotated[str, _database_url]
UrlPath = Annotated[str, _path]
LogLevel = Annotated[str, _log_level]


def caster_for(hint: Any) -> Callable[[str], Any]:
    """The caster a field's type implies (see the module docstring); TypeError for a type that implies none."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        own = [extra for extra in args[1:] if callable(extra)]
        return own[-1] if own else caster_for(args[0])
    if origin in (Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) == 1:
            return caster_for(inner[0])
    elif origin is Literal and all(isinstance(arg, str) for arg in args):
        return _one_of(*args)
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if args[0] is str:
            return _list
        if args[0] == Network:
            return _networks
    elif hint is int:
        return _as_int
    elif hint is float:
        return _as_float
    elif hint is str:
        return _as_str
    raise TypeError(f"no caster for a field of type {hint!r}")


@dataclass(frozen=True, slots=True)
class EnvPrefix:
    """Marks a group field: each field of its dataclass is read from `prefix` + the field's name upper-cased."""

    prefix: str


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable Settings.from_env reads: where its value goes, how it is cast, its default."""

    name: str
    group: str | None  # the Settings field of its group; None for a field of Settings itself
    prefix: str  # the group's (RAW_S3_); "" for a field of Settings itself
    field: str
    cast: Callable[[str], Any]
    default: Any


def variables_of(cls: type[Any]) -> tuple[Variable, ...]:
    """The variables of a settings dataclass's fields, in field order, each group's fields in its place."""
    found: list[Variable] = []
    hints = get_type_hints(cls, include_extras=True)
    for f in fields(cls):
        hint = hints[f.name]
        extras = get_args(hint)[1:] if get_origin(hint) is Annotated else ()
        prefix = next((extra.prefix for extra in extras if isinstance(extra, EnvPrefix)), None)
        if prefix is None:
            found.append(Variable(f.name.upper(), None, "", f.name, caster_for(hint), f.default))
            continue
        group_type = get_args(hint)[0]
        group_hints = get_type_hints(group_type, include_extras=True)
        for g in fields(group_type):
            cast = caster_for(group_hints[g.name])
            found.append(Variable(prefix + g.name.upper(), f.name, prefix, g.name, cast, g.default))
    return tuple(found)
