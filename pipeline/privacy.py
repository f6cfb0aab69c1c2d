"""Privacy rules applied to processed events, per client privacy level: redaction, IP hashing, user-agent families.

Values are searched (pipeline.personal, every pattern linear) only within the window that can reach the output,
so a 1 MB value costs what its first 1.5 KB cost, and a value crossing the cut is replaced whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import pairwise
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from collector.ingest.sites import hash_ip
from pipeline.personal import path_phone_spans, personal_spans, replace_spans

if TYPE_CHECKING:
    from collector.enrich.agents import UserAgents
    from collector.enrich.bots import BotClassifier

# Recorded in every processed object: bump it whenever a rule below changes what is redacted.
POLICY_VERSION = "2026-11-29.1"
REDACTED = "[REDACTED]"
MAX_STRING_CHARS = 1024
TRUNCATED = "…[truncated]"
LEVELS = ("standard", "gdpr", "hipaa")
# Personal data is searched for in a window this much longer than what is kept, so that a value starting before
# the cut is seen whole and replaced whole, never left as a fragment (an email address is at most 254 characters).
SCAN_MARGIN = 512
SCAN_WINDOW = MAX_STRING_CHARS + SCAN_MARGIN
PSEUDONYM = "pseudonym:"

# Keys are matched by their tokens (split on _ - . space and camelCase), never by substring: `cardNumber` and
# `credit_card` are sensitive, `cardinality`, `hotel`, `keyword` and `passenger` are not. Two adjacent tokens
# also count joined, so `passWord`, `e_mail`, `zip_code` and `first_name` read as password, email, ...
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
# gdpr and hipaa: who a person is and where they live, wherever the key appears.
PERSONAL_TOKENS = frozenset({
    "firstname", "lastname", "surname", "fullname", "forename", "givenname", "familyname", "middlename",
    "maidenname", "username", "nickname", "address", "addr", "street", "streetaddress", "housenumber", "postcode",
    "postalcode", "zip", "zipcode", "postal", "ip", "ipaddress", "ipv4", "ipv6", "latitude", "longitude", "lat",
    "lng", "geolocation", "coords", "coordinates", "birthplace", "nationalid", "cardholder", "fname", "lname",
    "bday", "msisdn",
})  # fmt: skip
PERSONAL_PAIRS = frozenset({
    ("first", "name"), ("last", "name"), ("full", "name"), ("given", "name"), ("family", "name"),
    ("middle", "name"), ("real", "name"), ("legal", "name"), ("display", "name"), ("customer", "name"),
    ("contact", "name"), ("billing", "name"), ("shipping", "name"), ("patient", "name"), ("national", "id"),
    ("driver", "license"), ("drivers", "license"), ("driving", "licence"), ("remote", "addr"),
    ("account", "holder"), ("additional", "name"),
})  # fmt: skip
# A bare `name` (or `city`, `first`, ...) is usually a product's or an event's; inside an object that describes a
# person (`customer: {name: ...}`, `contacts: [{name: ...}]`) it is that person's, and gdpr/hipaa remove it.
PERSON_TOKENS = frozenset({
    "user", "customer", "contact", "person", "people", "profile", "member", "buyer", "recipient", "sender",
    "billing", "shipping", "patient", "guest", "owner", "holder", "cardholder", "employee", "student",
    "applicant", "traveler", "traveller", "passenger", "attendee", "subscriber", "author", "visitor",
})  # fmt: skip
PERSON_FIELD_TOKENS = frozenset({"name", "first", "last", "middle", "given", "family", "initials", "city"})
HEALTH_TOKENS = frozenset({
    "diagnosis", "diagnoses", "condition", "conditions", "medication", "medications", "medicine", "prescription",
    "rx", "symptom", "symptoms", "treatment", "therapy", "patient", "health", "medical", "icd", "icd10", "allergy",
    "allergies", "disease", "illness", "mrn", "blood", "pregnancy", "pregnant", "disability", "clinic",
    "doctor", "physician", "hospital", "insurance", "genetic", "dna", "hiv", "vaccine", "vaccination",
})  # fmt: skip

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_SEPARATORS = re.compile(r"[_\-.\s]+")


def key_tokens(key: str) -> list[str]:
    """`key` split into lower-case words: on _ - . and spaces, then camelCase (`apiKey` → api, key)."""
    tokens: list[str] = []
    for part in _SEPARATORS.split(key):
        tokens.extend(word.lower() for word in _CAMEL.findall(part))
    return tokens


def _matches(tokens: list[str], singles: frozenset[str], pairs: frozenset[tuple[str, str]]) -> bool:
    # Plurals count too: `tokens`, `emails`, `cards`; and two tokens joined: `pass`+`word`, `e`+`mail`.
    words = [*tokens, *(a + b for a, b in pairwise(tokens))]
    if any(word in singles or (word[-1:] == "s" and word[:-1] in singles) for word in words):
        return True
    return any(pair in pairs for pair in pairwise(tokens))


def is_sensitive_key(key: str) -> bool:
    return _matches(key_tokens(key), SENSITIVE_TOKENS, SENSITIVE_PAIRS)


@dataclass(frozen=True, slots=True)
class KeyKind:
    """What a key's tokens say about the value under it."""

    sensitive: bool  # secrets, contact details, payment and government ids: redacted at every level
    personal: bool  # names, addresses, network and geo locations: redacted by gdpr and hipaa
    health: bool  # redacted by hipaa
    person: bool  # the value describes a person: its bare `name`, `city`, ... keys are personal
    person_field: bool  # a bare `name`, `city`, ...: personal inside a person


@lru_cache(maxsize=4096)
def _cached_kind(key: str) -> KeyKind:
    tokens = key_tokens(key)
    return KeyKind(
        sensitive=_matches(tokens, SENSITIVE_TOKENS, SENSITIVE_PAIRS),
        personal=_matches(tokens, PERSONAL_TOKENS, PERSONAL_PAIRS),
        health=_matches(tokens, HEALTH_TOKENS, frozenset()),
        person=_matches(tokens, PERSON_TOKENS, frozenset()),
        person_field=bool(tokens) and all(t in PERSON_FIELD_TOKENS for t in tokens),
    )


def key_kind(key: str) -> KeyKind:
    """The key's kind; short keys (nearly all of them) are remembered, so the cache holds at most ~0.5 MB."""
    return _cached_kind(key) if len(key) <= 100 else _cached_kind.__wrapped__(key)


def redact_text(text: str, *, contact: bool, health: bool) -> str:
    """`text` (cut to MAX_STRING_CHARS) with emails, phones, cards, IPs (`contact`) and health terms replaced."""
    window = text[:SCAN_WINDOW]
    spans = personal_spans(window, contact=contact, health=health)
    cleaned = replace_spans(window, spans, MAX_STRING_CHARS, REDACTED) if spans else window[:MAX_STRING_CHARS]
    if len(cleaned) > MAX_STRING_CHARS:  # short values (`hiv`) grew into markers: cut again, only markers or text
        cleaned = cleaned[:MAX_STRING_CHARS]  # already judged not personal can be cut here
        return cleaned + TRUNCATED
    return cleaned + TRUNCATED if len(text) > MAX_STRING_CHARS else cleaned


def user_agent_family(user_agent: str | None) -> str | None:
    """A browser family label (`Chrome`, `Firefox`, `bot`, ...) instead of the full, fingerprintable string, from the
    maintained bot list and uap-core rules the collector enriches rows with (for rows stored before enrichment)."""
    if not user_agent:
        return None
    return _family(user_agent[:MAX_STRING_CHARS])  # a family's mark comes early; a megabyte-long agent costs no more


@lru_cache(maxsize=4096)
def _family(user_agent: str) -> str:
    agents, bots = _classifiers()
    if bots.classify(user_agent) is not None:
        return "bot"
    return agents.parse(user_agent).browser_family or "other"


@lru_cache(maxsize=1)
def _classifiers() -> tuple[UserAgents, BotClassifier]:
    # Imported on first use: the rules take ~30 MB, which a worker processing only enriched rows never loads.
    from collector.enrich.agents import UserAgents
    from collector.enrich.bots import BotClassifier

    return UserAgents(), BotClassifier()


def event_family(event: dict[str, Any]) -> str | None:
    """The event's browser family: its enrichment columns' when it has them, else read from its user agent."""
    if event.get("bot") is True:
        return "bot"
    family = event.get("browser_family")
    if family is not None or event.get("bot") is False:
        return family if family is not None else ("other" if event.get("user_agent") else None)
    return user_agent_family(event.get("user_agent"))


_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]{0,30}:)?//")
_URL_DELIMITERS = "/?#&;="


def _cut_url(url: str) -> str | None:
    """`url` cut to the scanning window at a delimiter, so that no part is left half (a query value cut inside an
    email would no longer look like one); None when the window ends inside the host."""
    if len(url) <= SCAN_WINDOW:
        return url
    head = url[:SCAN_WINDOW]
    cut = max(head.rfind(c) for c in _URL_DELIMITERS)
    authority = _AUTHORITY.match(head)
    if authority is not None:
        ends = [i for i in (head.find(c, authority.end()) for c in "/?#") if i >= 0]
        if not ends:
            return None
        cut = max(cut, min(ends))
    return head[:cut] if cut > 0 else None


@dataclass(frozen=True, slots=True)
class Policy:
    """What one privacy level does; `apply` turns a raw event (export's snake_case dict) into a processed one."""

    level: str
    contact_values: bool  # emails, phones, cards and IP addresses redacted in values, keys, urls and ids
    personal_keys: bool  # names, addresses and locations redacted by key
    health: bool  # health keys and values redacted
    pseudonymize: bool  # no raw IP, user agent reduced to its family

    @classmethod
    def for_level(cls, level: str) -> Policy:
        if level not in LEVELS:
            raise ValueError(f"unknown privacy level {level!r}")
        strict = level != "standard"
        return cls(level, contact_values=strict, personal_keys=strict, health=level == "hipaa", pseudonymize=strict)

    def sensitive(self, key: str, *, in_person: bool = False) -> bool:
        kind = key_kind(key)
        if kind.sensitive or (self.health and kind.health):
            return True
        return self.personal_keys and (kind.personal or (in_person and kind.person_field))

    @property
    def scans(self) -> bool:
        return self.contact_values or self.health

    def clean(self, value: Any) -> Any:
        """`value` (JSON) with sensitive keys' values redacted, at any depth, through objects and lists."""
        return self._clean(value, False)

    def _clean(self, value: Any, in_person: bool) -> Any:
        kind = type(value)
        if kind is dict:
            out = {}
            for k, v in value.items():
                if len(k) > MAX_STRING_CHARS:  # names nothing; judging its tokens would cost what it is long
                    out[self.clean_text(k)] = REDACTED
                    continue
                key = self.clean_text(k) if self.scans else k
                if self.sensitive(k, in_person=in_person):
                    out[key] = REDACTED
                else:
                    out[key] = self._clean(v, self.personal_keys and key_kind(k).person)
            return out
        if kind is list:
            return [self._clean(item, in_person) for item in value]
        if kind is str:
            return self.clean_text(value)
        return value

    def clean_text(self, text: str) -> str:
        """`text` with personal values replaced (gdpr, hipaa), cut to MAX_STRING_CHARS."""
        if self.scans:
            return redact_text(text, contact=self.contact_values, health=self.health)
        return text[:MAX_STRING_CHARS] + TRUNCATED if len(text) > MAX_STRING_CHARS else text

    def clean_url(self, url: str | None) -> str | None:
        """A URL with credentials and sensitive query/fragment parameters redacted (and, for gdpr/hipaa, personal
        values anywhere in it, percent-encoded or not)."""
        if not url:
            return url
        cut = _cut_url(url)
        if cut is None:
            return REDACTED
        was_cut = len(cut) < len(url)
        try:
            parts = urlsplit(cut)
            netloc = parts.netloc
        except ValueError:
            return REDACTED
        if "@" in netloc:  # https://user:password@host/: credentials, at every level
            netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
        if self.scans:
            netloc = self._clean_component(netloc)
        fragment = parts.fragment
        if "=" in fragment:  # #access_token=...: OAuth and single-page apps put parameters here
            fragment = self._clean_query(fragment)
        elif self.scans:
            fragment = self._clean_component(fragment)
        path = self._clean_component(parts.path) if self.scans else parts.path
        cleaned = parts._replace(netloc=netloc, path=path, query=self._clean_query(parts.query), fragment=fragment)
        if cleaned != parts:
            cut = urlunsplit(cleaned)
        text = self.clean_text(cut)
        return text + TRUNCATED if was_cut and not text.endswith(TRUNCATED) else text

    def _clean_component(self, component: str) -> str:
        """A path or fragment with personal values replaced, found also where percent-encoded (jane%40x.org)."""
        if not component:
            return component
        decoded = unquote(component, errors="replace")
        spans = personal_spans(decoded, contact=self.contact_values, health=self.health)
        if self.contact_values and "/" in decoded:
            spans += path_phone_spans(decoded)
        if not spans:
            return component
        return quote(replace_spans(decoded, spans, len(decoded), REDACTED), safe="/:@!$&'()*+,;=~[]", errors="replace")

    def _clean_query(self, query: str) -> str:
        if not query:
            return query
        pairs = parse_qsl(query, keep_blank_values=True)
        cleaned = [
            (self.clean_text(k) if self.scans else k, REDACTED if self.sensitive(k) else self.clean_text(v))
            for k, v in pairs
        ]
        return query if cleaned == pairs else urlencode(cleaned, safe="[]/?:@", errors="replace")

    def _clean_id(self, value: Any, hasher: Callable[[str], str]) -> Any:
        """A visitor or session id that holds personal data becomes a keyed pseudonym: still one id per visitor."""
        if type(value) is not str or not value:
            return value
        if personal_spans(value[:SCAN_WINDOW], contact=self.contact_values, health=self.health):
            return PSEUDONYM + hasher(value)[:32]
        return self.clean_text(value)

    def apply(self, event: dict[str, Any], hash_address: Callable[[str], str]) -> dict[str, Any]:
        """The processed form of one raw event; `hash_address` is the client's keyed IP hash."""
        out = dict(event)
        out["event_data"] = self.clean(event.get("event_data"))
        out["extra"] = self.clean(event.get("extra"))
        out["url"] = self.clean_url(event.get("url"))
        out["referrer"] = self.clean_url(event.get("referrer"))
        out["path"] = self.clean_url(event.get("path"))
        if self.scans:
            for name in ("session_id", "visitor_id"):
                if name in event:
                    out[name] = self._clean_id(event[name], hash_address)
            if type(event.get("event_type")) is str:
                out["event_type"] = self.clean_text(event["event_type"])
        if self.pseudonymize:
            ip = out.pop("ip", None)
            if ip and not out.get("ip_hash"):
                out["ip_hash"] = hash_address(ip)
            out["ip"] = None
            out["user_agent"] = event_family(event)
            # Enrichment reduced these at ingest by the level then; a client whose level has since become stricter
            # gets today's detail (docs/enrichment.md).
            for name in _FINER_THAN[self.level]:
                if out.get(name) is not None:
                    out[name] = None
        return out


# Enrichment columns a level does not keep (collector.enrich.enricher reduces them the same way at ingest).
_FINER_THAN = {
    "standard": (),
    "gdpr": ("city",),
    "hipaa": ("city", "region", "browser_version", "os_version"),
}


def address_hasher(secret: str, salt: str | None) -> Callable[[str], str]:
    """The same keyed hash ingest uses (HMAC-SHA256, secret + the client's salt, full length)."""
    # A partial, not a lambda: it pickles, so rendering can move to a process pool with the policy.
    return partial(hash_ip, (secret + (salt or "")).encode())
