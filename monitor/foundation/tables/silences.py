"""``silences``: matchers plus a time range; a silenced alert notifies nobody while the silence is active.

Creating one checks what makes a silence safe to keep (at least one label value
named, an end after its start, an author and a reason), whoever creates it: the
API, the alerts page or the CLI. Expiring one writes a newer version ending now.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid

from monitor.foundation.clock import utc
from monitor.foundation.matchers import Matcher, match_all, parse_all

COLUMNS = ["id", "matchers", "starts_at", "ends_at", "created_by", "comment", "updated_at"]


class SilenceError(ValueError):
    """A bad silence; the message names the field."""


def create(store, clock, matchers: list, ends_at: dt.datetime, created_by: str, comment: str,
           starts_at: dt.datetime | None = None, sid: str | None = None) -> dict:
    """A new silence; ``sid`` given (from an idempotency key), a retry of the same create through any
    API replica writes the same id, which the table keeps once."""
    now = clock.now()
    starts_at = starts_at or now
    if not matchers:
        raise SilenceError("matchers: at least one matcher is required")
    try:
        parsed = parse_all(matchers)
    except ValueError as exc:
        raise SilenceError(f"matchers: {exc}") from None
    if all(m.op in ("=~", "!~") and m.value in (".*", "") or m.op == "!=" and m.value == "" for m in parsed):
        raise SilenceError("matchers: would silence every alert; name at least one label value")
    if ends_at <= starts_at:
        raise SilenceError("endsAt: must be after startsAt")
    if ends_at <= now:
        raise SilenceError("endsAt: is in the past")
    if not created_by.strip():
        raise SilenceError("createdBy: required")
    if not comment.strip():
        raise SilenceError("comment: required (say why, for whoever is on call next)")
    sid = sid or str(uuid.uuid4())
    row = [sid, json.dumps([m.as_dict() for m in parsed]), starts_at, ends_at, created_by.strip(), comment.strip(), now]
    store.insert("silences", [row], COLUMNS, agree=True)
    return get(store, clock, sid)


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
