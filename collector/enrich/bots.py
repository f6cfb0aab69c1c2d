"""BotClassifier: a verdict and a reason code per request, from crawler-user-agents' patterns matched by RE2.

Why RE2: the list has ~1,500 patterns; RE2 matches all of them at once in time linear in the user agent (1-3 µs),
where a backtracking engine could be driven quadratic by a hostile header. Why crawler-user-agents: a maintained,
tagged list (PyPI `crawler-user-agents`), not a regex of our own.
"""

from __future__ import annotations

import crawleruseragents
import re2

# Patterns of the list that match real browsers' user agents; excluded, each with why (docs/enrichment.md).
# tests/collector/enrich/test_bots.py checks each one still matches the browser named here (else it can go).
ALLOWED_PATTERNS = {
    # VS Code's built-in browser and webviews (Electron) say `Code/1.85.1`: a person at an editor, not a crawler.
    "Code\\/1\\.": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Code/1.85.1"
    " Chrome/114.0.5735.289 Electron/25.9.7 Safari/537.36",
}
# Reason codes (the `bot_reason` column, and `dropped:bot:<reason>` in the accounting).
CRAWLER, HEADLESS, AUTOMATION, LIBRARY, NO_USER_AGENT, IP_EXCLUDED = (
    "crawler", "headless", "automation", "library", "no_user_agent", "ip_excluded",
)  # fmt: skip
REASONS = (CRAWLER, HEADLESS, AUTOMATION, LIBRARY, NO_USER_AGENT, IP_EXCLUDED)


class BotClassifier:
    """Classifies user agents; pure (no cache of its own: the enricher caches by user agent)."""

    def __init__(self) -> None:
        self._patterns = [e for e in crawleruseragents.CRAWLER_USER_AGENTS_DATA if e["pattern"] not in ALLOWED_PATTERNS]
        options = re2.Options()
        options.max_mem = 64 << 20  # the list compiles to ~10 MB of DFA state; RE2's 8 MB default would fall back
        self._set = re2.Set.SearchSet(options)
        for entry in self._patterns:
            self._set.Add(entry["pattern"])
        self._set.Compile()
        self._reasons = [self._reason_of(entry["tags"], entry["pattern"]) for entry in self._patterns]

    @staticmethod
    def _reason_of(tags: list[str], pattern: str) -> str:
        if "http-library" in tags:
            return LIBRARY
        if "browser-automation" in tags:
            return HEADLESS if "eadless" in pattern or "PhantomJS" in pattern else AUTOMATION
        return CRAWLER

    def classify(self, user_agent: str | None) -> str | None:
        """The reason `user_agent` is a bot's, or None for a browser's."""
        if not user_agent or user_agent.isspace():
            return NO_USER_AGENT
        matched = self._set.Match(user_agent)
        if not matched:
            return None
        reasons = {self._reasons[i] for i in matched}
        for reason in (HEADLESS, AUTOMATION, LIBRARY):  # the more specific code wins over `crawler`
            if reason in reasons:
                return reason
        return CRAWLER

    def patterns(self) -> list[dict[str, object]]:
        """The list's entries in use (for the measurement in deploy/bench/enrich.py and the tests)."""
        return list(self._patterns)
