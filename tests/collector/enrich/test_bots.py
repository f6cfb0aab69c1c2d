"""Bot verdicts: recall on crawler-user-agents' own examples, no false positive on real browsers, reason codes."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import crawleruseragents
import pytest
import re2

from collector.enrich import bots
from collector.enrich.bots import ALLOWED_PATTERNS, BotClassifier


@pytest.fixture(scope="module")
def classifier() -> BotClassifier:
    """One classifier (compiling the list's ~1,500 patterns) for the module."""
    return BotClassifier()


def real_browser_agents() -> list[str]:
    """The distinct user agents of fake-useragent's browser data (current Chrome, Firefox, Safari, Edge, mobile)."""
    data = files("fake_useragent").joinpath("data/browsers.jsonl").read_text()
    return sorted({json.loads(line)["useragent"] for line in data.splitlines() if line.strip()})


def test_at_least_99_percent_of_the_lists_example_agents_are_flagged(classifier: BotClassifier) -> None:
    """Every entry's example user agents (`instances`) are bots, but those of the allow-listed patterns."""
    examples = [
        agent
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        if entry["pattern"] not in ALLOWED_PATTERNS
        for agent in entry["instances"]
    ]
    flagged = sum(classifier.classify(agent) is not None for agent in examples)
    print(f"bot recall: {flagged}/{len(examples)}")
    assert len(examples) > 2000 and flagged / len(examples) >= 0.99


def test_no_real_browser_agent_is_flagged(classifier: BotClassifier) -> None:
    """None of at least 500 real browsers' user agents is called a bot."""
    agents = real_browser_agents()
    flagged = [agent for agent in agents if classifier.classify(agent) is not None]
    print(f"bot false positives: {len(flagged)}/{len(agents)}")
    assert len(agents) >= 500 and flagged == []


@pytest.mark.parametrize("pattern", sorted(ALLOWED_PATTERNS))
def test_each_allow_listed_pattern_still_matches_the_browser_it_was_excluded_for(
    classifier: BotClassifier, pattern: str
) -> None:
    """An allow-list entry is needed: the list's pattern matches its browser, which the classifier lets through."""
    browser = ALLOWED_PATTERNS[pattern]
    assert re2.search(pattern, browser) is not None
    assert any(entry["pattern"] == pattern for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA)
    assert classifier.classify(browser) is None


@pytest.mark.parametrize(
    ("agent", "reason"),
    [
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", bots.CRAWLER),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36", bots.HEADLESS),
        ("curl/8.4.0", bots.LIBRARY),
        ("python-requests/2.31.0", bots.LIBRARY),
        ("Go-http-client/1.1", bots.LIBRARY),
        ("", bots.NO_USER_AGENT),
        (None, bots.NO_USER_AGENT),
        ("   ", bots.NO_USER_AGENT),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36", None),
    ],
)
def test_each_kind_of_agent_gets_its_reason_code(
    classifier: BotClassifier, agent: str | None, reason: str | None
) -> None:
    """Crawlers, headless browsers, HTTP libraries and empty agents are told apart; a browser is no bot."""
    assert classifier.classify(agent) == reason


def test_a_hostile_agent_is_classified_without_backtracking(classifier: BotClassifier) -> None:
    """A long, repetitive agent (the kind that drives a backtracking engine quadratic) is judged like any other."""
    assert classifier.classify("Mozilla/5.0 " + "(a" * 20_000) is None
    assert classifier.classify("(a" * 20_000 + " Googlebot/2.1") == bots.CRAWLER


# In-app browsers and Android agents with build ids, which lists have flagged before (MetaIAB, FB_IAB, `Build/...`):
# one real user agent a line.
IN_APP = (Path(__file__).parent / "in_app_agents.txt").read_text().splitlines()


@pytest.mark.parametrize("agent", IN_APP)
def test_in_app_browsers_are_not_bots(classifier: BotClassifier, agent: str) -> None:
    """Facebook, Instagram, TikTok, Snapchat, LinkedIn, Line and Google app webviews are people's browsers."""
    assert classifier.classify(agent) is None
