"""PII redaction for text fields, applied before anything is stored.

One combined regular expression finds candidates; each kind then gets a cheap
check that keeps false positives out (a Luhn check for card numbers, a parse
for IP addresses), because redacting an order number as a card would destroy
text the drift and review jobs need.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Iterable

_TRIGGER = re.compile(r"[0-9@]")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "ip": "[IP]"}

_PATTERNS = {
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}",
    # 13-19 digits, optionally grouped by spaces or dashes.
    # A following "." ends a sentence unless a digit comes after it (then it is a longer number).
    "card": r"(?<![\w.])\d(?:[ \-]?\d){12,18}(?!\w|\.\d)",
    "ip": r"(?<![\w.:])(?:(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})(?![\w:]|\.\d)",
    # International or national numbers with 9-15 digits and usual separators.
    "phone": r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]?\d{2,4}){2,4}(?!\w)",
}


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _valid(kind: str, text: str) -> bool:
    if kind == "card":
        digits = re.sub(r"\D", "", text)
        return 13 <= len(digits) <= 19 and luhn_ok(digits)
    if kind == "ip":
        try:
            ipaddress.ip_address(text)
            return True
        except ValueError:
            return False
    if kind == "phone":
        n = sum(c.isdigit() for c in text)
        return 9 <= n <= 15
    return True


class Redactor:
    """Replaces the configured PII kinds with placeholders; reports whether it changed anything."""

    def __init__(self, kinds: Iterable[str] = ("email", "phone", "card", "ip")):
        # Order matters: a card number also looks like a phone number, an IP like digits.
        order = [k for k in ("email", "card", "ip", "phone") if k in set(kinds)]
        self.kinds = order
        self._re = re.compile("|".join(f"(?P<{k}>{_PATTERNS[k]})" for k in order)) if order else None

    def _sub(self, m: re.Match) -> str:
        kind = m.lastgroup
        text = m.group(0)
        if _valid(kind, text):
            return PLACEHOLDERS[kind]
        if kind == "card" and "phone" in self.kinds:
            # Not a card (Luhn failed): it may still be a phone number.
            digits = sum(c.isdigit() for c in text)
            if 9 <= digits <= 15 and re.fullmatch(_PATTERNS["phone"], text):
                return PLACEHOLDERS["phone"]
        return text

    def redact(self, text: str) -> tuple[str, bool]:
        if not text or self._re is None:
            return text, False
        # Fast path: every kind needs a digit or an '@'.
        if _TRIGGER.search(text) is None:
            return text, False
        out = self._re.sub(self._sub, text)
        return out, out != text
