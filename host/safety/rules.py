"""Text hooks that need no model: regex and keyword rules, and PII detection.

Each hook answers two questions about a text: what it finds first (`found`, for a hook that
rejects, or for the ``during`` stage, which can only stop a stream) and the text with its
findings replaced (`redact`, with a count per rule name). Both are pure and linear in the text
for the built-in patterns: each starts only at the start of a word or a number (a
look-behind), so a long run of letters or digits is scanned once. A configured ``pattern`` is
the operator's own regular expression, run as written.

PII, in this order (a finding is replaced before the next kind looks, so a card number is
never also a phone number):

- ``pii.email``: ``local@domain.tld``, a local part of up to 64 characters, dotted domain
  labels and a 2-63 letter top-level domain -> ``[EMAIL]``.
- ``pii.card``: 13-19 digits, optionally grouped by spaces or dashes, that pass the Luhn
  check -> ``[CARD]``; a digit run that fails the check is left alone.
- ``pii.phone``: 9-15 digits (E.164's most) written as a phone number: an optional ``+country``
  code, an optional ``(area)`` code, then groups of digits separated by a space, dot or dash
  (or none) -> ``[PHONE]``. A dotted quad (an IPv4 address) is not a phone number. It errs
  toward redaction: a long bare number (an order id) is redacted too.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .settings import PIIKind, PIISettings, RuleSettings

EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?!\w)")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,6}(?!\w)"
)
IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
PLACEHOLDERS: dict[PIIKind, str] = {"email": "[EMAIL]", "card": "[CARD]", "phone": "[PHONE]"}
ORDER: tuple[PIIKind, ...] = ("email", "card", "phone")


def luhn(digits: str) -> bool:
    """The Luhn checksum of a string of digits (card numbers carry one)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def is_card(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn(digits)


def is_phone(text: str) -> bool:
    return 9 <= len(_digits(text)) <= 15 and not IPV4.fullmatch(text)


#: kind -> (pattern, the check a match must pass).
DETECTORS: dict[PIIKind, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "email": (EMAIL, lambda _: True),
    "card": (CARD, is_card),
    "phone": (PHONE, is_phone),
}


def _sub(
    pattern: re.Pattern[str], valid: Callable[[str], bool], text: str, replacement: str
) -> tuple[str, int]:
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        if not valid(match.group()):
            return match.group()
        count += 1
        return replacement

    return pattern.sub(replace, text), count


@dataclass(frozen=True)
class Rule:
    """A configured regex or keyword rule; its name names it everywhere."""

    name: str
    regex: re.Pattern[str]
    action: str
    replacement: str
    stages: frozenset[str]
    default: bool

    @classmethod
    def of(cls, settings: RuleSettings) -> Rule:
        flags = re.IGNORECASE if settings.ignore_case else 0
        if settings.pattern is not None:
            regex = re.compile(settings.pattern, flags)
        else:  # whole words or phrases, the longest first
            words = sorted({w.strip() for w in settings.keywords}, key=len, reverse=True)
            regex = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", flags)
        return cls(
            settings.name,
            regex,
            settings.action,
            settings.replacement,
            frozenset(settings.stages),
            settings.default,
        )

    @property
    def switch(self) -> str:
        """The name a key switches this hook by."""
        return self.name

    def found(self, text: str) -> str | None:
        return self.name if self.regex.search(text) else None

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        redacted, count = self.regex.subn(self.replacement, text)
        return redacted, Counter({self.name: count} if count else {})


@dataclass(frozen=True)
class PII:
    """PII detection (see the module's note); its findings are named ``pii.<kind>``."""

    kinds: tuple[PIIKind, ...]
    action: str
    stages: frozenset[str]
    default: bool
    switch: str = "pii"

    @classmethod
    def of(cls, settings: PIISettings) -> PII:
        kinds = tuple(kind for kind in ORDER if kind in settings.kinds)
        return cls(kinds, settings.action, frozenset(settings.stages), settings.default)

    def found(self, text: str) -> str | None:
        for kind in self.kinds:
            pattern, valid = DETECTORS[kind]
            if any(valid(m.group()) for m in pattern.finditer(text)):
                return f"pii.{kind}"
        return None

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        for kind in self.kinds:
            pattern, valid = DETECTORS[kind]
            text, count = _sub(pattern, valid, text, PLACEHOLDERS[kind])
            if count:
                counts[f"pii.{kind}"] = count
        return text, counts


def redact_pii(text: str, kinds: tuple[PIIKind, ...] = ORDER) -> str:
    """``text`` with every PII finding of ``kinds`` replaced by its placeholder."""
    return PII(kinds, "redact", frozenset(), True).redact(text)[0]


TextHook = Rule | PII
