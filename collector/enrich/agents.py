"""UserAgents: browser, OS and device type from the maintained uap-core rules (PyPI `ua-parser`, with its Rust
resolver `ua-parser-rs` when installed), replacing the hand-written family patterns processing used to have.

Loaded lazily, on first use (on storage's thread): the rules and their compiled matchers take ~30 MB, which a
process that never enriches (a pipeline-only worker) should not pay.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import ua_parser

# Operating systems of phones; an Android device without `Mobile` in its agent is a tablet (Google's own guidance
# for Chrome on Android), as are iPads and Kindles (their agents say so).
_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "Symbian OS"})
_TABLETS = ("iPad", "Tablet", "Kindle", "Silk/")
_DOMAINS = ua_parser.Domain.USER_AGENT | ua_parser.Domain.OS
_DESKTOP_OS = frozenset({"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "FreeBSD", "Debian"})


@dataclass(frozen=True, slots=True)
class Agent:
    """What a user agent says of its browser, system and device; version parts are None when unknown."""

    browser_family: str | None
    browser_version: str | None  # the major version: finer ones identify more and tell little
    os_family: str | None
    os_version: str | None  # major.minor
    device_type: str | None  # desktop / mobile / tablet / other


class UserAgents:
    """Parses user agents (uncached: the enricher caches by user-agent string)."""

    def __init__(self) -> None:
        self._parser: ua_parser.Parser | None = None
        self._lock = threading.Lock()

    def _load(self) -> ua_parser.Parser:
        with self._lock:
            if self._parser is None:
                matchers = ua_parser.load_lazy_builtins()
                self._parser = ua_parser.Parser(ua_parser.BestAvailableResolver(matchers))
            return self._parser

    def parse(self, user_agent: str | None) -> Agent:
        if not user_agent:
            return Agent(None, None, None, None, None)
        parser = self._parser or self._load()
        # Not the device domain: its rules cost as much as the other two together, and the type needs only the OS.
        result = parser(user_agent, _DOMAINS)
        browser, os_ = result.user_agent, result.os
        os_family = os_.family if os_ is not None and os_.family != "Other" else None
        os_version = None
        if os_ is not None and os_.major:
            os_version = os_.major if not os_.minor else f"{os_.major}.{os_.minor}"
        family = browser.family if browser is not None and browser.family != "Other" else None
        return Agent(
            family, browser.major if browser is not None and family else None, os_family, os_version,
            _device_type(user_agent, os_family),
        )  # fmt: skip


def _device_type(user_agent: str, os_family: str | None) -> str:
    if any(mark in user_agent for mark in _TABLETS):
        return "tablet"
    if os_family == "Android" and "Mobile" not in user_agent:
        return "tablet"
    if os_family in _MOBILE_OS:
        return "mobile"
    if os_family in _DESKTOP_OS:
        return "desktop"
    return "other"
