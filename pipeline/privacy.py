"""Privacy rules applied to processed events, per client privacy level: redaction, IP hashing, user-agent families."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from collector.sites import hash_ip

# Recorded in every processed object: bump it whenever a rule below changes what is redacted.
POLICY_VERSION = "2026-11-28.1"
REDACTED = "[REDACTED]"
MAX_STRING_CHARS = 1024
TRUNCATED = "…[truncated]"
LEVELS = ("standard", "gdpr", "hipaa")

# Keys are matched by their tokens (split on _ - . space and camelCase), never by substring: `cardNumber` and
# `credit_card` are sensitive, `cardinality`, `hotel`, `keyword` and `passenger` are not.
SENSITIVE_TOKENS = frozenset({
    "password", "passwd", "pwd", "passcode", "passphrase", "secret", "token", "credential", "credentials",
    "authorization", "auth", "cookie", "apikey", "accesstoken", "refreshtoken",
    "email", "emailaddress", "mail", "phone", "phonenumber", "mobile", "telephone", "tel", "fax",
    "ssn", "sin", "nino", "passport", "iban", "bic", "swift", "card", "cardnumber", "creditcard", "cc", "ccn",
    "cvv", "cvc", "cvv2", "pin", "otp", "dob", "birth", "birthdate", "birthday",
})  # fmt: skip
SENSITIVE_PAIRS = frozenset({
    ("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("credit", "card"),
    ("social", "security"), ("account", "number"), ("routing", "number"), ("tax", "id"),
})  # fmt: skip
HEALTH_TOKENS = frozenset({
    "diagnosis", "diagnoses", "condition", "conditions", "medication", "medications", "medicine", "prescription",
    "rx", "symptom", "symptoms", "treatment", "therapy", "patient", "health", "medical", "icd", "icd10", "allergy",
    "allergies", "disease", "illness", "mrn", "blood", "pregnancy", "pregnant", "disability", "clinic",
    "doctor", "physician", "hospital", "insurance", "genetic", "dna", "hiv", "vaccine", "vaccination",
})  # fmt: skip
# Values that name a health condition, for hipaa: whole words, case-insensitive.
HEALTH_WORDS = re.compile(
    r"\b(diabet\w*|cancer\w*|oncolog\w*|hiv|aids|hepatitis|pregnan\w*|depress\w*|anxiety|schizophren\w*|bipolar|"
    r"asthma|alzheimer\w*|dementia|chemotherapy|insulin|tumou?r\w*|std|sti|herpes|opioid\w*|addiction|"
    r"abortion|miscarriage|dialysis|transplant|autism|adhd|epilep\w*|covid[-\s]?19|tuberculosis)\b",
    re.IGNORECASE,
)
ICD10 = re.compile(r"\b[A-TV-Z][0-9][0-9AB](?:\.[0-9A-TV-Z]{1,4})\b")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# A phone number: an optional +, then 7 to 15 digits with the usual separators; dates, times and decimals are not.
PHONE_CANDIDATE = re.compile(r"(?<![\w.:/-])\+?\(?\d[\d\s().-]{5,22}\d(?![\w:/])")
NOT_PHONE = re.compile(r"^\d{4}-\d{2}-\d{2}|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$|^\d+\.\d+$|^\d+(?:\.\d+){2,}$")

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_SEPARATORS = re.compile(r"[_\-.\s]+")

BROWSERS = (  # order matters: Edge and Opera also say Chrome, Chrome also says Safari
    ("bot", re.compile(r"bot|crawl|spider|slurp|headless|lighthouse", re.I)),
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Chrome", re.compile(r"Chrome/|CriOS/|Chromium/")),
    ("Safari", re.compile(r"Safari/")),
    ("curl", re.compile(r"^curl/")),
)


def key_tokens(key: str) -> list[str]:
    """`key` split into lower-case words: on _ - . and spaces, then camelCase (`apiKey` → api, key)."""
    tokens: list[str] = []
    for part in _SEPARATORS.split(key):
        tokens.extend(word.lower() for word in _CAMEL.findall(part))
    return tokens


def _matches(tokens: list[str], singles: frozenset[str], pairs: frozenset[tuple[str, str]]) -> bool:
    # Plurals count too: `tokens`, `emails`, `cards`.
    if any(token in singles or (token[-1:] == "s" and token[:-1] in singles) for token in tokens):
        return True
    return any(pair in pairs for pair in pairwise(tokens))


def is_sensitive_key(key: str) -> bool:
    return _matches(key_tokens(key), SENSITIVE_TOKENS, SENSITIVE_PAIRS)


def is_health_key(key: str) -> bool:
    return _matches(key_tokens(key), HEALTH_TOKENS, frozenset())


def _redact_phones(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        candidate = match.group(0)
        digits = sum(ch.isdigit() for ch in candidate)
        if not 7 <= digits <= 15 or NOT_PHONE.match(candidate.strip()):
            return candidate
        return REDACTED

    return PHONE_CANDIDATE.sub(replace, text)


def redact_text(text: str, *, contact: bool, health: bool) -> str:
    """`text` with emails and phone numbers (`contact`) and health terms (`health`) replaced."""
    if contact:
        text = _redact_phones(EMAIL.sub(REDACTED, text))
    if health:
        text = ICD10.sub(REDACTED, HEALTH_WORDS.sub(REDACTED, text))
    return text


def user_agent_family(user_agent: str | None) -> str | None:
    """A browser family label (`Chrome`, `Firefox`, `bot`, ...) instead of the full, fingerprintable string."""
    if not user_agent:
        return None
    for family, pattern in BROWSERS:
        if pattern.search(user_agent):
            return family
    return "other"


@dataclass(frozen=True, slots=True)
class Policy:
    """What one privacy level does; `apply` turns a raw event (export's snake_case dict) into a processed one."""

    level: str
    contact_values: bool  # emails / phone numbers redacted in values, urls and referrers
    health: bool  # health keys and values redacted
    pseudonymize: bool  # no raw IP, user agent reduced to its family

    @classmethod
    def for_level(cls, level: str) -> Policy:
        if level not in LEVELS:
            raise ValueError(f"unknown privacy level {level!r}")
        strict = level != "standard"
        return cls(level, contact_values=strict, health=level == "hipaa", pseudonymize=strict)

    def sensitive(self, key: str) -> bool:
        tokens = key_tokens(key)
        if _matches(tokens, SENSITIVE_TOKENS, SENSITIVE_PAIRS):
            return True
        return self.health and _matches(tokens, HEALTH_TOKENS, frozenset())

    def clean(self, value: Any) -> Any:
        """`value` (JSON) with sensitive keys' values redacted, at any depth, through objects and lists."""
        kind = type(value)
        if kind is dict:
            return {k: REDACTED if self.sensitive(k) else self.clean(v) for k, v in value.items()}
        if kind is list:
            return [self.clean(item) for item in value]
        if kind is str:
            return self.clean_text(value)
        return value

    def clean_text(self, text: str) -> str:
        if self.contact_values or self.health:
            text = redact_text(text, contact=self.contact_values, health=self.health)
        if len(text) > MAX_STRING_CHARS:
            text = text[:MAX_STRING_CHARS] + TRUNCATED
        return text

    def clean_url(self, url: str | None) -> str | None:
        """A URL with sensitive query parameters redacted (and, for gdpr/hipaa, contact details anywhere in it)."""
        if not url:
            return url
        try:
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError:
            return REDACTED
        if query:
            cleaned = [(k, REDACTED if self.sensitive(k) else self.clean_text(v)) for k, v in query]
            url = urlunsplit(parts._replace(query=urlencode(cleaned, safe="[]")))
        return self.clean_text(url)

    def apply(self, event: dict[str, Any], hash_address: Callable[[str], str]) -> dict[str, Any]:
        """The processed form of one raw event; `hash_address` is the client's keyed IP hash."""
        out = dict(event)
        out["event_data"] = self.clean(event.get("event_data"))
        out["extra"] = self.clean(event.get("extra"))
        out["url"] = self.clean_url(event.get("url"))
        out["referrer"] = self.clean_url(event.get("referrer"))
        out["path"] = self.clean_url(event.get("path"))
        if self.pseudonymize:
            ip = out.pop("ip", None)
            if ip and not out.get("ip_hash"):
                out["ip_hash"] = hash_address(ip)
            out["ip"] = None
            out["user_agent"] = user_agent_family(event.get("user_agent"))
        return out


def address_hasher(secret: str, salt: str | None) -> Callable[[str], str]:
    """The same keyed hash ingest uses (HMAC-SHA256, secret + the client's salt, full length)."""
    key = (secret + (salt or "")).encode()
    return lambda ip: hash_ip(key, ip)
