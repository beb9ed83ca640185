"""Injected time. Logic that depends on "now" takes a clock, so tests move time instead of sleeping."""
from __future__ import annotations

import datetime as dt
import threading


def utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)


def iso_utc(ts: dt.datetime) -> str:
    """ISO 8601 in UTC with a Z, as every API answer writes times (naive values are UTC)."""
    text = utc(ts).replace(tzinfo=None).isoformat()
    return text + "Z"


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: dt.datetime | str):
        if isinstance(start, str):
            start = dt.datetime.fromisoformat(start)
        self._now = utc(start)
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
