"""Where personal values sit in client text: emails, phone numbers, card numbers, IP addresses, health terms.

Every pattern here is linear in its input: a match can start only where a run or token starts (a look-behind),
and no two quantifiers can share a character unless bounded or possessive, so a long run of a pattern's
characters that never completes a match is walked once, not once per position (the old email pattern's
quadratic case). Candidates are then checked in Python (Luhn, digit counts, IPv6 groups).
"""

from __future__ import annotations

import re

# Values that name a health condition, for hipaa: whole words, case-insensitive (`\b` anchors every start), grouped
# by first letter so that a word start that begins no term costs one comparison per group, not one per term.
HEALTH_WORDS = re.compile(
    r"\b(?=\w\w\w)(?:a(?:ids|nxiety|sthma|lzheimer\w*|bortion|ddiction|dhd|utism)|bipolar|"
    r"c(?:ancer\w*|hemotherapy|ovid[-\s]?19)|d(?:iabet\w*|epress\w*|ementia|ialysis)|epilep\w*|"
    r"h(?:iv|epatitis|erpes)|insulin|miscarriage|o(?:ncolog\w*|pioid\w*)|pregnan\w*|"
    r"s(?:chizophren\w*|td|ti)|t(?:umou?r\w*|ransplant|uberculosis))\b",
    re.IGNORECASE,
)
ICD10 = re.compile(r"\b[A-TV-Z][0-9][0-9AB](?:\.[0-9A-TV-Z]{1,4})\b")
# The look-behind lets a match start only where a run of local-part characters starts, so a long run with no @
# is walked once, not once per position (the quadratic case); the domain's class excludes % and @, so the domain
# scans after successive `%40`s never overlap.
EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+(?:@|%40)[\w.-]+\.[^\W\d_]{2,}")  # \w: jürgen@exämple.de too
# A phone number: an optional +, then 7 to 15 digits with the usual separators; dates, times and decimals are not.
PHONE_CANDIDATE = re.compile(r"(?<![\w./-])\+?\(?\d[\d\s().-]{5,22}\d(?![\w:/])")
NOT_PHONE = re.compile(r"^\d{4}-\d{2}-\d{2}|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$|^\d+\.\d+$")
_DOTTED = re.compile(r"^\d+(?:\.\d+){2,}$")
# A payment card: 13 to 19 digits, optionally grouped by single spaces or dashes, then checked with Luhn.
CARD_CANDIDATE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|[01]?\d\d?)"  # 192.168.001.010 too
IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\d|\.\d)")
# IPv6 candidates are bounded in length, taken possessively (no backtracking) and start only at a token
# boundary; _is_ipv6 then checks the groups (eight, or fewer around one ::).
IPV6_CANDIDATE = re.compile(r"(?<![0-9A-Fa-f.])(?<![0-9A-Fa-f]:)[0-9A-Fa-f:]{2,39}+(?:\.\d{1,3})*+(?![\w:])")
_IPV6_GROUP = re.compile(r"[0-9A-Fa-f]{1,4}")
_DIGIT = re.compile(r"\d")

_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")
_NON_DIGITS = re.compile(r"\D+")


def _luhn(digits: str) -> bool:
    # Every second digit from the right is doubled (and its digits summed): a translation does that in C.
    return sum(map(int, digits[-1::-2] + digits[-2::-2].translate(_LUHN_DOUBLED))) % 10 == 0


def _is_card(candidate: str) -> bool:
    groups = candidate.replace("-", " ").split(" ")
    if len(groups) == 1:
        return _luhn(candidate)
    # The candidate may have swallowed one digit group before or after the number (`ref 2 4111 1111 1111 1111`).
    for first, last in ((0, len(groups)), (1, len(groups)), (0, len(groups) - 1), (1, len(groups) - 1)):
        digits = "".join(groups[first:last])
        if 13 <= len(digits) <= 19 and _luhn(digits):
            return True
    return False


def _is_phone(candidate: str) -> bool:
    if not 7 <= len(_NON_DIGITS.sub("", candidate)) <= 15:
        return False
    text = candidate.strip()
    if NOT_PHONE.match(text):
        return False
    # 1.2.3 and 10.0.19041.1 are versions; 415.555.0134 is a phone number.
    return not (_DOTTED.match(text) and any(len(group) <= 2 for group in text.split(".")))


def _is_ipv6(candidate: str) -> bool:
    head, _, v4 = candidate.partition(".")
    if candidate.count(":") < 2 or candidate.count("::") > 1 or ":::" in candidate:
        return False
    if v4:  # ::ffff:192.0.2.1 — the dotted tail stands for two groups
        if candidate.count(".") != 3:
            return False
        head = head.rsplit(":", 1)[0] + ":0:0"
    groups = [g for g in head.split(":") if g]
    if not groups or not all(_IPV6_GROUP.fullmatch(g) for g in groups):
        return False
    return len(groups) <= 7 if "::" in head else len(groups) == 8


def personal_spans(text: str, *, contact: bool, health: bool) -> list[tuple[int, int]]:
    """Where `text` holds an email, phone, card number or IP address (`contact`) or a health term (`health`)."""
    spans: list[tuple[int, int]] = []
    # Each pattern runs only on text holding the character it cannot match without (a substring test is ~50 ns).
    if contact and _DIGIT.search(text):
        spans += [m.span() for m in CARD_CANDIDATE.finditer(text) if _is_card(m.group())]
        spans += [m.span() for m in PHONE_CANDIDATE.finditer(text) if _is_phone(m.group())]
        if "." in text:
            spans += [m.span() for m in IPV4.finditer(text)]
    if contact and ("@" in text or "%40" in text):
        spans += [m.span() for m in EMAIL.finditer(text)]
    if contact and text.count(":") >= 2:
        spans += [m.span() for m in IPV6_CANDIDATE.finditer(text) if _is_ipv6(m.group())]
    if health:
        spans += [m.span() for m in HEALTH_WORDS.finditer(text)]
        if "." in text:
            spans += [m.span() for m in ICD10.finditer(text)]
    return spans


def replace_spans(text: str, spans: list[tuple[int, int]], limit: int, mark: str) -> str:
    """`text` up to `limit` with each span (merged where they overlap) replaced by one `mark`; a span that
    starts before `limit` is replaced whole, so the cut never leaves part of it."""
    out: list[str] = []
    position = 0
    for start, end in sorted(spans):
        if start >= limit:
            break
        if end <= position:
            continue
        if start >= position:
            out.append(text[position:start])
            out.append(mark)
        position = end
    if position < limit:
        out.append(text[position:limit])
    return "".join(out)


def path_phone_spans(path: str) -> list[tuple[int, int]]:
    """Phone numbers right after a / in a decoded URL path: a bare number there is an id (/orders/4155550134), but
    one written like a phone number (+1 415..., 415-555-...) is one."""
    return [
        m.span()
        for m in PHONE_CANDIDATE.finditer(path.replace("/", " "))
        if not m.group().strip().isdigit() and _is_phone(m.group())
    ]
