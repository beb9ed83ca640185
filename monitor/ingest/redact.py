"""PII redaction for text fields, applied before anything is stored.

Regular expressions find candidates; each kind then gets a cheap check that
keeps false positives out (a Luhn check for card numbers, a parse for IP
addresses), because redacting an order number as a card would destroy text the
drift and review jobs need. Each expression only runs on texts that hold the
character it cannot match without ('@', a digit, '::'-style colons), since
this runs on every text of every event on the ingest path.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Iterable

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "ip": "[IP]"}

# A following "." ends a sentence unless a digit comes after it (then it is a longer number).
_END = r"(?!\w|\.\d)"
_PATTERNS = {
    "email": r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}",
    # 13-19 digits, optionally grouped by spaces or dashes.
    "card": r"(?<![\w.])\d(?:[ \-]?\d){12,18}" + _END,
    "ip": r"(?<![\w.:])(?:\d{1,3}\.){3}\d{1,3}" + _END,
    # International or national numbers with 9-15 digits and usual separators.
    "phone": r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]?\d{2,4}){2,4}(?!\w)",
}
_IPV6 = re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
# Every card, IPv4 address and phone number holds a run like this; most texts hold none.
_HAS_DIGIT_RUN = re.compile(r"\d[\d .()\-]{5,}\d")
_HAS_IPV6 = re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f]*:|::")


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


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


class Redactor:
    """Replaces the configured PII kinds with placeholders; reports whether it changed anything."""

    def __init__(self, kinds: Iterable[str] = ("email", "phone", "card", "ip")):
        wanted = set(kinds)
        self.kinds = [k for k in ("email", "card", "ip", "phone") if k in wanted]
        self._email = re.compile(_PATTERNS["email"]) if "email" in wanted else None
        # Order matters: a card number also looks like a phone number, an IP like digits.
        numeric = [k for k in ("card", "ip", "phone") if k in wanted]
        self._numeric = re.compile("(?=[\\d+(])(?:" + "|".join(f"(?P<{k}>{_PATTERNS[k]})" for k in numeric) + ")") \
            if numeric else None
        self._ipv6 = "ip" in wanted
        self._phone = "phone" in wanted

    def _numeric_sub(self, m: re.Match) -> str:
        kind, text = m.lastgroup, m.group(0)
        if kind == "card":
            digits = re.sub(r"\D", "", text)
            if luhn_ok(digits):
                return PLACEHOLDERS["card"]
            # Not a card: it may still be a phone number.
            if self._phone and 9 <= len(digits) <= 15 and re.fullmatch(_PATTERNS["phone"], text):
                return PLACEHOLDERS["phone"]
            return text
        if kind == "ip":
            return PLACEHOLDERS["ip"] if _is_ip(text) else text
        return PLACEHOLDERS["phone"] if 9 <= _digits(text) <= 15 else text

    @staticmethod
    def _ipv6_sub(m: re.Match) -> str:
        return PLACEHOLDERS["ip"] if _is_ip(m.group(0)) else m.group(0)

    def redact(self, text: str) -> tuple[str, bool]:
        if not text:
            return text, False
        out = text
        if self._email is not None and "@" in out:
            out = self._email.sub(PLACEHOLDERS["email"], out)
        if self._numeric is not None and _HAS_DIGIT_RUN.search(out):
            out = self._numeric.sub(self._numeric_sub, out)
        if self._ipv6 and _HAS_IPV6.search(out):
            out = _IPV6.sub(self._ipv6_sub, out)
        return out, out is not text and out != text
