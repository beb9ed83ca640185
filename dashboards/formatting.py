"""How figures print on the pages and in the exports: one formatter per unit.

Money keeps its significant digits (a cost per request of $0.000031 must not
print as $0.0000), large counts abbreviate where space is short (120.8k, with
the exact value in a title attribute), missing values are a dash.
"""
from __future__ import annotations

import math

DASH = "–"
MONEY_DIGITS = 3  # significant digits below $1


def _trim(text: str, keep: int) -> str:
    """Drop trailing zeros after the decimal point, keeping at least ``keep`` decimals."""
    if "." not in text:
        return text
    whole, frac = text.split(".")
    frac = frac.rstrip("0").ljust(keep, "0")
    return f"{whole}.{frac}" if frac else whole


def money(v) -> str:
    """Dollars: 3 significant digits below $1 ($0.000031, $0.0123, $0.50), cents to $1,000 ($12.40),
    whole dollars to a million ($1,234), then abbreviated ($1.2M)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    sign, a = ("-" if v < 0 else ""), abs(float(v))
    if a == 0:
        return "$0.00"
    if a < 1:
        decimals = max(2, MONEY_DIGITS - 1 - math.floor(math.log10(a)))
        text = _trim(f"{a:.{decimals}f}", 2)
    elif a < 1_000:
        text = f"{a:,.2f}"
    elif a < 1_000_000:
        text = f"{a:,.0f}"
    else:
        text = _abbreviate(a)
    return f"{sign}${text}"


def _abbreviate(a: float) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if round(a / size, 1) >= 1 or size == 1e3:
            scaled = round(a / size, 1)
            if scaled >= 1000 and suffix != "B":  # 999,950 is 1.0M, not 1000.0k
                return _abbreviate(scaled * size * 1.0001)
            return _trim(f"{scaled:.1f}", 0) + suffix
    raise AssertionError("unreachable")


def count(v, short: bool = False) -> str:
    """A count with thousands separators, or (``short``) abbreviated from 1,000 on: 120.8k, 1.2M, 3B."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    a = abs(v)
    if not short or a < 1_000:
        return f"{v:,.0f}"
    return ("-" if v < 0 else "") + _abbreviate(float(a))


def fmt(v, unit: str, short: bool = False) -> str:
    """A figure in its unit: pct (a share, 0.1234 -> 12.34%), ms, usd, x (a ratio), count."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    if unit == "pct":
        return f"{v * 100:.2f}%"
    if unit == "ms":
        return f"{v:,.0f} ms"
    if unit == "usd":
        return money(v)
    if unit == "x":
        return f"{v:.3g}×"
    return count(v, short)


def exact(v, unit: str) -> str:
    """The full value for a title attribute: what an abbreviated or rounded figure stands for."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if unit == "usd":
        a = abs(float(v))
        decimals = 2 if a >= 1 or a == 0 else max(2, 5 - math.floor(math.log10(a)))  # 6 significant digits
        return ("-" if v < 0 else "") + "$" + _trim(f"{a:,.{decimals}f}", 2)
    if unit == "count":
        return f"{v:,.0f}"
    if unit == "pct":
        return _trim(f"{v * 100:.4f}", 2) + "%"
    return fmt(v, unit)


# ISO 639-1 codes as the pages name them (the languages support traffic most often holds); others show as codes.
LANGUAGE_NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "no": "Norwegian",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sv": "Swedish",
    "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese", "und": "undetermined",
}
