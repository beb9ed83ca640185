"""``silences``: matchers plus a time range; a silenced alert notifies nobody while the silence is active.

Creating one checks what makes a silence safe to keep (at least one matcher that picks
alerts out rather than matching nearly all, an end after its start and within a year, an
author and a reason), whoever creates it: the API, the alerts page or the CLI. Expiring
one writes a newer version ending now.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid

from monitor.foundation.clock import utc
from monitor.foundation.matchers import Matcher, match_all, parse_all

COLUMNS = ["id", "matchers", "starts_at", "ends_at", "created_by", "comment", "updated_at", "request_hash"]
MAX_LENGTH = dt.timedelta(days=365)
MAX_TEXT = 2000
# Values no real label holds: a matcher that accepts them accepts nearly every value.
_PROBES = ("", "nlpmonprobe", "NLPMON-PROBE-7F3A9C", "nlpmon-probe-7f3a9c", "0000", "Zq 9/\u00e9\u2603.x_Y")


class SilenceError(ValueError):
    """A bad silence; the message names the field."""


class SilenceConflict(SilenceError):
    """An idempotency key already used with another request body."""


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


def check(matchers: list, starts_at: dt.datetime, ends_at: dt.datetime, created_by, comment, now: dt.datetime
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


def create(store, clock, matchers: list, ends_at: dt.datetime, created_by, comment,
           starts_at: dt.datetime | None = None, sid: str | None = None, request_hash: str = "") -> tuple[dict, bool]:
    """A new silence: (silence, replayed). With ``sid`` (from an idempotency key) and the ``request_hash``
    of the body it came with, a retry through any API replica returns the silence as stored, unchanged
    (``replayed``), and another body under the same key is a SilenceConflict."""
    if sid is not None:
        stored = _request_hash(store, sid)
        if stored is not None:
            return _replay(store, clock, sid, stored, request_hash)
    now = clock.now()
    starts_at = starts_at or now
    parsed = check(matchers, starts_at, ends_at, created_by, comment, now)
    new = sid is None
    sid = sid or str(uuid.uuid4())
    row = [sid, json.dumps([m.as_dict() for m in parsed]), starts_at, ends_at, created_by.strip(), comment.strip(),
           now, request_hash]
    # Two replicas creating under one key at once: the token keeps the first row, the other replays it.
    store.insert("silences", [row], COLUMNS, agree=True,
                 settings=None if new else {"insert_deduplication_token": f"silence:{sid}"})
    if not new:
        stored = _request_hash(store, sid)
        if stored != request_hash:
            return _replay(store, clock, sid, stored, request_hash)
    return get(store, clock, sid), False


def _replay(store, clock, sid: str, stored: str, request_hash: str) -> tuple[dict, bool]:
    if stored and stored != request_hash:  # empty: a silence older than request hashes, taken as the same
        raise SilenceConflict("Idempotency-Key: already used to create a silence with a different body; "
                              "use a new key for a new silence")
    return get(store, clock, sid), True


def _request_hash(store, sid: str) -> str | None:
    """The body digest a silence was created with, or None when there is no silence ``sid``."""
    rows = store.query("SELECT argMin(request_hash, updated_at) FROM silences WHERE id = {id:String} "
                       "HAVING count() > 0", {"id": sid}, agree=True)
    return rows[0][0] if rows else None


def expire(store, clock, sid: str) -> dict | None:
    s = get(store, clock, sid)
    if s is None:
        return None
    now = clock.now()
    if s["status"] == "expired":
        return s
    row = store.query(f"SELECT {', '.join(COLUMNS)} FROM silences FINAL WHERE id = {{id:String}}", {"id": sid}, agree=True)[0]
    row = list(row)
    row[3] = max(now, utc(row[2]))
    row[6] = now
    store.insert("silences", [row], COLUMNS, agree=True)
    return get(store, clock, sid)


def get(store, clock, sid: str) -> dict | None:
    rows = list_all(store, clock, sid=sid)
    return rows[0] if rows else None


def list_all(store, clock, sid: str | None = None) -> list[dict]:
    where, params = ("WHERE id = {id:String}", {"id": sid}) if sid else ("", {})
    rows = store.query_dicts(f"SELECT {', '.join(COLUMNS)} FROM silences FINAL {where} ORDER BY starts_at DESC",
                             params, agree=True)
    now = clock.now()
    out = []
    for r in rows:
        starts, ends = utc(r["starts_at"]), utc(r["ends_at"])
        status = "pending" if now < starts else "active" if now < ends else "expired"
        out.append({"id": r["id"], "matchers": [str(Matcher(**m)) for m in json.loads(r["matchers"])],
                    "startsAt": starts, "endsAt": ends, "createdBy": r["created_by"], "comment": r["comment"],
                    "status": status})
    return out


def active_matchers(store, now: dt.datetime) -> list[list[Matcher]]:
    """The matchers of every silence active at ``now``."""
    rows = store.query("SELECT matchers FROM silences FINAL WHERE starts_at <= {now:DateTime64(3, 'UTC')} "
                       "AND ends_at > {now:DateTime64(3, 'UTC')}", {"now": now}, agree=True)
    return [[Matcher(**m) for m in json.loads(r[0])] for r in rows]


def silencer(store, now: dt.datetime):
    """``labels -> bool``: whether an alert with these labels is silenced at ``now``."""
    active = active_matchers(store, now)
    return lambda labels: any(match_all(s, labels) for s in active)


def sync_replica(store) -> None:
    """On a cluster, wait until this replica has every part of the table (a new active scheduler)."""
    store.sync_replica("silences")
