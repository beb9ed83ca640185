"""Silences (Alertmanager's ``silence/``): what makes one acceptable, its status, and muting by it.

Every way of creating a silence (the API, the alerts page, the CLI) goes through
:func:`create`, which checks what makes a silence safe to keep: at least one
matcher that picks alerts out rather than matching nearly all, an end after its
start and within a year, an author and a reason. Expiring one writes a newer
version ending now. An idempotency key's silence is bound to the body it was
created with (``request_hash``): the same body again returns it as stored, an
expired one included; another body is a :class:`SilenceConflict`.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, replace
from typing import Mapping

from monitor.foundation.clock import iso_utc
from monitor.foundation.matchers import Matcher, match_all, parse_all
from monitor.foundation.tables import silences
from monitor.foundation.tables.silences import SilenceRow

MAX_LENGTH = dt.timedelta(days=365)
MAX_TEXT = 2000
# Values no real label holds: a matcher that accepts them accepts nearly every value.
_PROBES = ("", "nlpmonprobe", "NLPMON-PROBE-7F3A9C", "nlpmon-probe-7f3a9c", "0000", "Zq 9/\u00e9\u2603.x_Y")


class SilenceError(ValueError):
    """A bad silence; the message names the field."""


class SilenceConflict(SilenceError):
    """An idempotency key already used with another request body."""


@dataclass(frozen=True)
class Silence(SilenceRow):
    """A silence as people see it: its newest version and its status at the time it was read."""

    status: str = ""  # pending, active or expired

    def as_json(self) -> dict:
        """Alertmanager's field names (the API's shape)."""
        return {"id": self.id, "matchers": [str(m) for m in self.matchers], "startsAt": iso_utc(self.starts_at),
                "endsAt": iso_utc(self.ends_at), "createdBy": self.created_by, "comment": self.comment,
                "status": self.status}


def selective(m: Matcher) -> bool:
    """Whether a matcher picks out some alerts rather than all but some: ``name=value``, or a regex that
    accepts neither the empty value nor values no label holds (``service=~.+`` accepts every service)."""
    if m.op == "=":
        return m.value != ""
    if m.op == "=~":
        return not any(m.matches({m.name: probe}) for probe in _PROBES)
    return False  # != and !~ keep every alert but the ones they name


def ends_after(starts_at: dt.datetime, duration: dt.timedelta) -> dt.datetime:
    """The end of a silence given as a duration; SilenceError for one that is not positive or too long."""
    if duration <= dt.timedelta(0):
        raise SilenceError("duration: must be positive")
    if duration > MAX_LENGTH:
        raise SilenceError(f"duration: a silence lasts at most {MAX_LENGTH.days} days")
    return starts_at + duration


def check(matchers, starts_at: dt.datetime, ends_at: dt.datetime, created_by, comment, now: dt.datetime
          ) -> list[Matcher]:
    """The parsed matchers of a silence that is safe to keep, else SilenceError naming the field."""
    if not isinstance(matchers, list) or not matchers or not all(isinstance(m, str) for m in matchers):
        raise SilenceError('matchers: give a list of at least one matcher such as "service=support-bot"')
    try:
        parsed = parse_all(matchers)
    except ValueError as exc:
        raise SilenceError(f"matchers: {exc}") from None
    if not any(selective(m) for m in parsed):
        raise SilenceError("matchers: would silence every alert (or every alert but a few); name at least one "
                           "label value with = or a regex that does not match everything")
    if ends_at <= starts_at:
        raise SilenceError("endsAt: must be after startsAt")
    if ends_at <= now:
        raise SilenceError("endsAt: is in the past")
    if ends_at - starts_at > MAX_LENGTH:
        raise SilenceError(f"endsAt: a silence lasts at most {MAX_LENGTH.days} days (a rule that should never "
                           "page needs changing, not silencing)")
    for field, value in (("createdBy", created_by), ("comment", comment)):
        if not isinstance(value, str):
            raise SilenceError(f"{field}: must be a string")
        if len(value) > MAX_TEXT:
            raise SilenceError(f"{field}: at most {MAX_TEXT} characters")
    if not created_by.strip():
        raise SilenceError("createdBy: required")
    if not comment.strip():
        raise SilenceError("comment: required (say why, for whoever is on call next)")
    return parsed


def create(store, clock, matchers, ends_at: dt.datetime, created_by, comment, starts_at: dt.datetime | None = None,
           sid: str | None = None, request_hash: str = "") -> tuple[Silence, bool]:
    """A new silence: (silence, replayed). With ``sid`` (from an idempotency key) and the ``request_hash``
    of the body it came with, a retry through any API replica returns the silence as stored, unchanged
    (``replayed``), and another body under the same key is a SilenceConflict."""
    if sid is not None:
        stored = silences.first_request_hash(store, sid)
        if stored is not None:
            return _replay(store, clock, sid, stored, request_hash)
    now = clock.now()
    starts_at = starts_at or now
    parsed = check(matchers, starts_at, ends_at, created_by, comment, now)
    keyed = sid is not None
    sid = sid or str(uuid.uuid4())
    # Two replicas creating under one key at once: the token keeps the first row, the other replays it.
    silences.write(store, SilenceRow(sid, tuple(parsed), starts_at, ends_at, created_by.strip(), comment.strip(), now,
                                     request_hash), token=f"silence:{sid}" if keyed else None)
    if keyed:
        stored = silences.first_request_hash(store, sid)
        if stored != request_hash:
            return _replay(store, clock, sid, stored, request_hash)
    return get(store, clock, sid), False


def _replay(store, clock, sid: str, stored: str, request_hash: str) -> tuple[Silence, bool]:
    if stored and stored != request_hash:  # empty: a silence older than request hashes, taken as the same
        raise SilenceConflict("Idempotency-Key: already used to create a silence with a different body; "
                              "use a new key for a new silence")
    return get(store, clock, sid), True


def expire(store, clock, sid: str) -> Silence | None:
    """End silence ``sid`` now (a pending one at its start); None when there is none."""
    found = silences.rows(store, sid)
    if not found:
        return None
    row, now = found[0], clock.now()
    if status(row, now) != "expired":
        silences.write(store, replace(row, ends_at=max(now, row.starts_at), updated_at=now))
    return get(store, clock, sid)


def status(row: SilenceRow, now: dt.datetime) -> str:
    return "pending" if now < row.starts_at else "active" if now < row.ends_at else "expired"


def get(store, clock, sid: str) -> Silence | None:
    found = list_all(store, clock, sid)
    return found[0] if found else None


def list_all(store, clock, sid: str | None = None) -> list[Silence]:
    now = clock.now()
    return [Silence(**vars(r), status=status(r, now)) for r in silences.rows(store, sid)]


class Silencer:
    """A Muter: the silences active at one moment."""

    def __init__(self, active: list[SilenceRow]):
        self.active = [r.matchers for r in active]

    @classmethod
    def at(cls, store, now: dt.datetime) -> "Silencer":
        return cls(silences.active(store, now))

    def mutes(self, labels: Mapping[str, str]) -> bool:
        return any(match_all(m, labels) for m in self.active)
