"""Time: the injected clock, and the one parser for times that people and clients write.

Logic that depends on "now" takes a clock, so tests move time instead of sleeping.
"""
from __future__ import annotations

import datetime as dt
import math
import threading
from typing import Any, Protocol


def utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)


def to_millis(ts: dt.datetime) -> dt.datetime:
    """``ts`` at the precision a DateTime64(3) column stores it: a time written and read back compares
    equal to this, never to the microseconds a real clock gives."""
    return ts.replace(microsecond=ts.microsecond - ts.microsecond % 1000)


def iso_utc(ts: dt.datetime) -> str:
    """ISO 8601 in UTC with a Z, as every API answer writes times (naive values are UTC)."""
    text = utc(ts).replace(tzinfo=None).isoformat()
    return text + "Z"


def parse_time(value: Any, epoch_strings: bool = True) -> dt.datetime:
    """A point in time as an aware UTC datetime, from what an event, a query string, a form or a
    command line carries.

    ISO 8601 (``Z`` or an offset; naive means UTC; ``2026-11-20T10:00`` from a datetime-local
    form field too), or Unix epoch seconds (milliseconds when above 1e11) as a number, or as a
    string of digits when ``epoch_strings`` (query strings and command lines carry only text;
    the event contract does not take them). ValueError says what was expected.
    """
    if isinstance(value, str):
        text = value.strip()
        if epoch_strings and text.replace(".", "", 1).isdigit():
            return parse_time(float(text))
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            ts = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("must be an ISO 8601 timestamp such as 2026-11-24T09:30:00Z or epoch seconds") from None
        return utc(ts)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        seconds = value / 1000 if value > 1e11 else value
        try:
            return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError("epoch value out of range") from None
    raise ValueError("must be an ISO 8601 string or epoch seconds")


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: dt.datetime | str):
        self._now = parse_time(start) if isinstance(start, str) else utc(start)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, delta: dt.timedelta | float) -> dt.datetime:
        if not isinstance(delta, dt.timedelta):
            delta = dt.timedelta(seconds=delta)
        with self._lock:
            self._now += delta
            return self._now

    def set(self, ts: dt.datetime) -> None:
        with self._lock:
            self._now = utc(ts)
