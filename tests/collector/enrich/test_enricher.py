"""The enricher's columns per request: user agent details, geography, bot verdicts, by privacy level and policy."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from collector.enrich import bots
from collector.enrich.agents import UserAgents
from collector.enrich.enricher import BotStats, Enricher
from collector.enrich.geo import GeoLookup, Place
from collector.enrich.policy import EnrichPolicy, InvalidPolicy
from collector.storage import copyformat
from collector.storage.batch import Batch
from tests.collector.enrich.geodb import write_city_database

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1"
    " Mobile/15E148 Safari/604.1"
)
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory) -> GeoLookup:
    """The test City database, opened once for the module."""
    return GeoLookup(write_city_database(tmp_path_factory.mktemp("geo") / "city.mmdb"))


def policy(level: str = "standard", **features: object) -> EnrichPolicy:
    return EnrichPolicy.from_config("client_a", level, features)


def decode(fields: bytes) -> list[object]:
    """The enrichment columns back from their COPY encoding (bool, then text)."""
    values: list[object] = []
    offset = 0
    while offset < len(fields):
        length = int.from_bytes(fields[offset : offset + 4], "big", signed=True)
        offset += 4
        if length < 0:
            values.append(None)
            continue
        raw = fields[offset : offset + length]
        offset += length
        values.append(raw == b"\x01" if not values else raw.decode())
    return values


def test_device_type_agrees_with_real_browser_data() -> None:
    """Each of fake-useragent's real browsers gets the device type (desktop, mobile, tablet) its data names."""
    data = files("fake_useragent").joinpath("data/browsers.jsonl").read_text()
    agents = {row["useragent"]: row["type"] for row in map(json.loads, data.splitlines())}
    parser = UserAgents()
    wrong = {agent: kind for agent, kind in agents.items() if parser.parse(agent).device_type != kind}
    assert len(agents) >= 500 and wrong == {}


def test_a_browser_gets_its_family_versions_device_and_place(geo: GeoLookup) -> None:
    """A standard client's row carries browser and OS with versions, the device type, and country, region, city."""
    reason, fields = Enricher(geo).fields((policy(), IPHONE, "203.0.113.9", None, False))
    assert reason is None
    assert decode(fields) == [
        False, None, "Mobile Safari", "17", "iOS", "17.1", "mobile", "US", "CA", "San Francisco",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("gdpr", ["Chrome", "131", "Windows", "10", "desktop", "DE", "BE", None]),
        ("hipaa", ["Chrome", None, "Windows", None, "desktop", "DE", None, None]),
    ],
)
def test_detail_is_reduced_by_privacy_level(geo: GeoLookup, level: str, expected: list[object]) -> None:
    """gdpr keeps no city; hipaa keeps families (no versions) and the country only."""
    _, fields = Enricher(geo).fields((policy(level), CHROME, "198.51.100.4", None, False))
    assert decode(fields)[2:] == expected


def test_a_trusted_cdn_country_wins_and_drops_the_databases_finer_places(geo: GeoLookup) -> None:
    """A CDN's country that differs from the database's replaces it, and region and city are then left out."""
    _, fields = Enricher(geo).fields((policy(), CHROME, "203.0.113.9", "NL", False))
    assert decode(fields)[7:] == ["NL", None, None]
    _, agreeing = Enricher(geo).fields((policy(), CHROME, "203.0.113.9", "US", False))
    assert decode(agreeing)[7:] == ["US", "CA", "San Francisco"]


def test_without_a_database_there_is_no_geography() -> None:
    """No GEOIP_DATABASE and no CDN header: the place columns stay NULL."""
    _, fields = Enricher().fields((policy(), CHROME, "203.0.113.9", None, False))
    assert decode(fields)[7:] == [None, None, None]


def test_an_unknown_or_malformed_address_has_no_place(geo: GeoLookup) -> None:
    """An address outside the database, or not an address, has no place rather than an error."""
    assert geo.lookup("192.0.2.1") == Place(None, None, None)
    assert geo.lookup("not an address") == Place(None, None, None)
    assert geo.lookup("2001:db8::1").country == "FR"


def test_bot_reasons_from_the_agent_the_tracker_and_the_clients_own_addresses() -> None:
    """A crawler's agent, the tracker's webdriver flag and an excluded address each make a bot, with its reason."""
    enricher = Enricher()
    excluded = policy(bot_ip_exclusions=["10.0.0.0/8", "2001:db8::1"])
    assert enricher.fields((policy(), BOT, "203.0.113.9", None, False))[0] == "crawler"
    assert enricher.fields((policy(), CHROME, "203.0.113.9", None, True))[0] == "automation"
    assert enricher.fields((excluded, CHROME, "10.1.2.3", None, False))[0] == "ip_excluded"
    assert enricher.fields((excluded, CHROME, "11.1.2.3", None, False))[0] is None
    assert decode(enricher.fields((policy(), BOT, None, None, False))[1])[:2] == [True, "crawler"]


def test_lookups_are_cached_by_agent_and_address(geo: GeoLookup) -> None:
    """The second request from the same agent and address parses and looks up nothing."""
    enricher = Enricher(geo)
    for _ in range(3):
        enricher.fields((policy(), CHROME, "203.0.113.9", None, False))
    assert (enricher.stats.agent_misses, enricher.stats.place_misses) == (1, 1)


RECEIVED = copyformat.timestamp_ns(1_700_000_000_000_000_000)


def rows_of(n: int) -> list[bytes]:
    """`n` rows as ingest encodes them: the enrichment columns' NULLs, then received_at."""
    return [copyformat.ROW_START + bytes([i]) * 7 + copyformat.ENRICH_NULLS + RECEIVED for i in range(n)]


def test_a_batch_is_enriched_per_request_and_dropped_bots_are_counted() -> None:
    """Rows get their request's columns; a dropping client's bot rows are left out and counted per reason."""
    counted = []
    enricher = Enricher(on_count=counted.append)
    dropping = EnrichPolicy.from_config("client_b", "standard", {"bots": "drop"})
    rows = rows_of(6)
    batch = Batch(
        b"x" * 16, rows, {"client_a": 3, "client_b": 3}, requests=[
            (2, (policy(), CHROME, None, None, False)), (1, (policy(), BOT, None, None, False)),
            (3, (dropping, BOT, None, None, False)),
        ],
    )  # fmt: skip
    out = enricher.apply(batch)
    assert len(out.rows) == 3 and out.clients == {"client_a": 3} and out.requests == ()
    assert all(copyformat.ENRICH_NULLS not in row and row.endswith(RECEIVED) for row in out.rows)
    assert [row[:9] for row in out.rows] == [row[:9] for row in rows[:3]]
    assert counted == [{("client_a", "bot:crawler"): 1, ("client_b", "dropped:bot:crawler"): 3}]
    assert (enricher.bot_stats.dropped_crawler, enricher.bot_stats.flagged_crawler) == (3, 1)
    assert enricher.bot_stats.dropped == 3


def test_every_row_of_a_request_is_spliced_whatever_its_end() -> None:
    """A request's rows usually end alike (one comparison each); one received at another time is spliced on its
    own, one without the NULL run is kept as it is, and each row keeps its own start and receive time."""
    other = copyformat.timestamp_ns(1_800_000_000_000_000_000)
    rows = [*rows_of(3), copyformat.ROW_START + b"o" * 7 + copyformat.ENRICH_NULLS + other, b"no enrichment here" * 4]
    batch = Batch(b"x" * 16, rows, {"client_a": 5}, requests=[(5, (policy(), CHROME, None, None, False))])
    out = Enricher().apply(batch).rows
    fields = Enricher().fields((policy(), CHROME, None, None, False))[1]
    assert out[:3] == [row[: -len(copyformat.ENRICH_NULLS) - len(RECEIVED)] + fields + RECEIVED for row in rows[:3]]
    assert out[3] == copyformat.ROW_START + b"o" * 7 + fields + other
    assert out[4] == rows[4]


def test_a_batch_without_requests_is_left_as_it_is() -> None:
    """A batch the buffer did not describe (a replay, a test's) passes through untouched."""
    batch = Batch(b"x" * 16, rows_of(2), {"client_a": 2})
    assert Enricher().apply(batch) is batch


@pytest.mark.parametrize(
    "features",
    [{"bots": "block"}, {"bot_ip_exclusions": "10.0.0.0/8"}, {"bot_ip_exclusions": ["not a network"]}, []],
)
def test_an_unusable_bot_policy_is_refused(features: object) -> None:
    """A `features` object enrichment cannot read makes the client's config invalid, not a silent default."""
    with pytest.raises(InvalidPolicy):
        EnrichPolicy.from_config("client_a", "standard", features)


def test_an_old_journal_row_is_padded_to_todays_columns(tmp_path: Path) -> None:
    """A record with the 16 columns of an earlier release gets NULLs for the ones it lacks, before its receive time
    (journal replay)."""
    old = (16).to_bytes(2, "big") + b"payload" + RECEIVED
    upgraded = copyformat.upgrade(old)
    new_columns = len(copyformat.COLUMNS) - 16
    assert upgraded == copyformat.ROW_START + b"payload" + copyformat.NULL * new_columns + RECEIVED
    assert copyformat.upgrade(upgraded) == upgraded


def test_bot_stats_count_every_reason_the_classifier_gives_under_both_actions() -> None:
    """BotStats' fields are exactly flagged_ and dropped_ for each of bots.REASONS: a new reason without its
    counters would fail the enrichment of its events on storage's thread (stored unenriched), not count them."""
    expected = {f"{action}_{reason}" for action in ("flagged", "dropped") for reason in bots.REASONS}
    assert set(BotStats.__slots__) == expected
