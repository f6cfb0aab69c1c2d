"""The redaction rules, table-driven: seeded PII never survives, innocent keys and values are never redacted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from collector.ingest.sites import hash_ip
from pipeline.privacy import (
    MAX_STRING_CHARS,
    REDACTED,
    TRUNCATED,
    Policy,
    address_hasher,
    is_sensitive_key,
    key_tokens,
    user_agent_family,
)

SENSITIVE_KEYS = [
    "password", "Password", "user_password", "passwd", "secret", "clientSecret", "token", "access_token",
    "refreshToken", "apiKey", "api_key", "API-KEY", "x.api.key", "email", "user_email", "userEmail", "emailAddress",
    "phone", "phoneNumber", "mobile_phone", "ssn", "card", "cardNumber", "credit_card", "creditCard", "cvv", "cvc",
    "iban", "pin", "privateKey", "secret_key", "authorization", "dateOfBirth", "social_security_number",
]  # fmt: skip
INNOCENT_KEYS = [
    "hotel", "keyword", "keywords", "passenger", "passengers", "telescope", "cardinality", "cardigan", "discard",
    "button", "page", "category", "emailing_opt_in_page", "tokenizer_version", "phonetic", "pinned", "spinner",
    "secretary_general_page", "compass", "bypass", "carder_count", "emailed", "mailbox_size", "tokenized",
    "session_length", "author", "keystone", "monkey", "donkey", "ticket_class", "apiVersion", "pass_count",
]  # fmt: skip

PII_EMAIL = "jane.doe+shop@example.org"
PII_PHONE = "+1 (415) 555-0134"
PII_VALUES = [PII_EMAIL, PII_PHONE, "415-555-0199", "+44 20 7946 0958", "jane%40example.org"]


def seeded_pii() -> dict[str, Any]:
    """eventData with PII behind sensitive keys, nested in objects and lists, and inside free text."""
    return {
        "password": "hunter2-secret-value",
        "user": {"email": "seeded-a@example.com", "profile": {"phoneNumber": "seeded-b-555-0100"}},
        "payment": {"cardNumber": "4111111111111111", "cvv": "123-seeded", "credit_card": {"last4": "1111"}},
        "contacts": [{"email": "seeded-c@example.com"}, {"name": "x", "apiKey": "seeded-d-key"}],
        "tokens": ["seeded-e-token"],
        "items": [[{"ssn": "078-05-1120"}]],
        "note": f"call me at {PII_PHONE} or mail {PII_EMAIL}",
        "list_of_text": [f"reach {PII_EMAIL}", "fine text"],
    }


SEEDED_SECRETS = [
    "hunter2-secret-value", "seeded-a@example.com", "seeded-b-555-0100", "4111111111111111", "123-seeded", "1111",
    "seeded-c@example.com", "seeded-d-key", "seeded-e-token", "078-05-1120",
]  # fmt: skip


def no_hash(ip: str) -> str:
    raise AssertionError("no address to hash in these events")


@pytest.mark.parametrize("key", SENSITIVE_KEYS)
def test_sensitive_keys_are_recognised_by_their_tokens(key: str) -> None:
    """Every seeded sensitive key name is sensitive."""
    assert is_sensitive_key(key), key_tokens(key)


@pytest.mark.parametrize("key", INNOCENT_KEYS)
def test_innocent_keys_are_never_redacted(key: str) -> None:
    """No innocent key, not even one containing a sensitive word as a substring, is redacted at any level."""
    for level in ("standard", "gdpr", "hipaa"):
        cleaned = Policy.for_level(level).clean({key: "keep-me", "nested": [{key: "keep-me-too"}]})
        assert cleaned == {key: "keep-me", "nested": [{key: "keep-me-too"}]}, (level, key_tokens(key))


@pytest.mark.parametrize("level", ["standard", "gdpr", "hipaa"])
def test_no_seeded_secret_survives_behind_a_sensitive_key(level: str) -> None:
    """Values under sensitive keys are gone at every depth, through objects and lists."""
    text = json.dumps(Policy.for_level(level).clean(seeded_pii()))
    survivors = [secret for secret in SEEDED_SECRETS if secret in text]
    assert survivors == []


@pytest.mark.parametrize("level", ["gdpr", "hipaa"])
def test_gdpr_redacts_contact_details_anywhere(level: str) -> None:
    """Under gdpr and hipaa no email or phone number survives in eventData, url query strings or the referrer."""
    policy = Policy.for_level(level)
    event = {
        "event_data": seeded_pii(),
        "url": f"https://shop.example.com/thanks?email={PII_EMAIL}&ref=abc&phone=4155550134&q=hotel",
        "referrer": "https://mail.example.net/?to=jane%40example.org&utm_source=newsletter",
        "path": "/thanks",
        "ip": "198.51.100.7",
        "ip_hash": None,
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    }
    hasher = address_hasher("secret", "salt")
    out = policy.apply(event, hasher)
    text = json.dumps(out)
    assert [v for v in [*PII_VALUES, "4155550134", "jane@example.org"] if v in text] == []
    assert "q=hotel" in out["url"] and "utm_source=newsletter" in out["referrer"]
    assert out["ip"] is None and out["ip_hash"] == hash_ip(b"secretsalt", "198.51.100.7")
    assert out["user_agent"] == "Chrome"
    assert out["event_data"]["list_of_text"][1] == "fine text"


def test_standard_keeps_values_but_redacts_sensitive_query_parameters() -> None:
    """Standard redacts by key only: free text stays, a url's ?email= parameter does not."""
    out = Policy.for_level("standard").apply(
        {"event_data": {"note": "ticket 42", "email": PII_EMAIL}, "url": f"https://a.com/?email={PII_EMAIL}&page=2",
         "referrer": None, "path": None, "ip": "198.51.100.7", "user_agent": "curl/8.0"},
        no_hash,
    )  # fmt: skip
    assert out["event_data"] == {"note": "ticket 42", "email": REDACTED}
    assert PII_EMAIL not in out["url"] and "page=2" in out["url"]
    assert out["ip"] == "198.51.100.7" and out["user_agent"] == "curl/8.0"


INNOCENT_VALUES = [
    "2026-11-28T09:15:00Z", "2026-11-28", "12.50", "1234.5678", "v1.2.3", "order 42", "SKU-12345", "3 items",
    "https://example.com/products/123456", "10:30", "Hotel Mirabeau, 2 nights",
]  # fmt: skip


@pytest.mark.parametrize("value", INNOCENT_VALUES)
def test_gdpr_leaves_dates_prices_and_versions_alone(value: str) -> None:
    """Contact-detail patterns do not eat ordinary values."""
    assert Policy.for_level("gdpr").clean({"value": value}) == {"value": value}


def test_hipaa_redacts_health_keys_and_values() -> None:
    """hipaa adds health keys (diagnosis, medication, ...) and health terms in values to gdpr's rules."""
    data = {
        "diagnosis": "E11.9", "medication": ["metformin"], "search": "diabetes diet plans",
        "note": "code E11.9 noted", "patient": {"id": "p-1"}, "page": "pricing",
    }  # fmt: skip
    out = Policy.for_level("hipaa").clean(data)
    assert out["diagnosis"] == REDACTED and out["medication"] == REDACTED and out["patient"] == REDACTED
    assert "diabetes" not in out["search"] and "E11.9" not in out["note"]
    assert out["page"] == "pricing"
    assert Policy.for_level("gdpr").clean(data)["diagnosis"] == "E11.9"


def test_long_strings_are_capped() -> None:
    """A huge string value is cut to a bounded length."""
    out = Policy.for_level("standard").clean({"blob": "x" * 100_000})
    assert len(out["blob"]) < 1100


@pytest.mark.parametrize(
    ("agent", "family"),
    [
        ("Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/120 Safari/537.36 Edg/120.0", "Edge"),
        ("Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15", "Safari"),
        ("Mozilla/5.0 (X11; rv:120.0) Gecko/20100101 Firefox/120.0", "Firefox"),
        ("Googlebot/2.1 (+http://www.google.com/bot.html)", "bot"),
        (None, None),
    ],
)
def test_user_agent_family(agent: str | None, family: str | None) -> None:
    """The user agent becomes a coarse family label."""
    assert user_agent_family(agent) == family


def test_a_cleaned_url_keeps_its_shape_and_is_marked_truncated_only_when_cut() -> None:
    """Redacting a query value re-encodes only the query; a URL longer than the window is cut at a delimiter."""
    gdpr = Policy.for_level("gdpr")
    assert (
        gdpr.clean_url("https://a.com/x?email=jane@x.org&page=2#top") == f"https://a.com/x?email={REDACTED}&page=2#top"
    )
    assert gdpr.clean_url("https://a.com/u/jane%40x.org/p") == f"https://a.com/u/{REDACTED}/p"
    long_url = gdpr.clean_url("https://a.com/?" + "&".join(f"q{i}=v" for i in range(600)))
    assert long_url is not None and long_url.endswith("=v" + TRUNCATED) and len(long_url) <= 1024 + len(TRUNCATED)


def test_strings_stay_bounded_when_markers_outgrow_what_they_replace() -> None:
    """A value of many short matches (`hiv hiv ...`) is still cut to MAX_STRING_CHARS after redaction."""
    out = Policy.for_level("hipaa").clean_text("hiv " * 300)
    assert "hiv" not in out and len(out) <= MAX_STRING_CHARS + len(TRUNCATED)


@pytest.mark.parametrize(
    ("level", "kept"),
    [
        ("standard", {"city": "Berlin", "region": "BE", "browser_version": "131", "os_version": "10"}),
        ("gdpr", {"city": None, "region": "BE", "browser_version": "131", "os_version": "10"}),
        ("hipaa", {"city": None, "region": None, "browser_version": None, "os_version": None}),
    ],
)
def test_processing_keeps_the_enrichment_detail_of_todays_level(level: str, kept: dict[str, Any]) -> None:
    """A row enriched under a laxer level loses what the client's level now leaves out; the family stays."""
    event = {
        "user_agent": "Mozilla/5.0 Chrome/131.0", "bot": False, "browser_family": "Chrome", "country": "DE",
        **{"city": "Berlin", "region": "BE", "browser_version": "131", "os_version": "10"},
    }  # fmt: skip
    out = Policy.for_level(level).apply(event, address_hasher("secret", "salt"))
    assert {name: out[name] for name in kept} == kept and out["country"] == "DE"
    assert out["user_agent"] == ("Chrome" if level != "standard" else event["user_agent"])
