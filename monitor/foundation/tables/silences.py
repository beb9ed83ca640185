"""``silences``: matchers plus a time range, versions of a silence replacing each other (by ``updated_at``).

Statements only: what makes a silence acceptable, its status and muting are the alert
engine's (alerts/silence.py). ``request_hash`` is the digest of the body an idempotency
key first created the silence with.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from monitor.foundation.matchers import Matcher

COLUMNS = ["id", "matchers", "starts_at", "ends_at", "created_by", "comment", "updated_at", "request_hash"]


@dataclass(frozen=True)
class SilenceRow:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: dt.datetime
    ends_at: dt.datetime
    created_by: str
    comment: str
    updated_at: dt.datetime
    request_hash: str = ""


def _values(row: SilenceRow) -> list:
    return [row.id, json.dumps([m.as_dict() for m in row.matchers]), row.starts_at, row.ends_at, row.created_by,
            row.comment, row.updated_at, row.request_hash]


def _row(values) -> SilenceRow:
    sid, matchers, starts, ends, created_by, comment, updated, request_hash = values
    return SilenceRow(sid, tuple(Matcher(**m) for m in json.loads(matchers)), starts, ends, created_by, comment,
                      updated, request_hash)


def write(store, row: SilenceRow, token: str | None = None) -> None:
    """A new version of a silence (a new one with ``token``: a retry of the same create lands once)."""
    store.insert("silences", [_values(row)], COLUMNS, agree=True,
                 settings={"insert_deduplication_token": token} if token else None)


def rows(store, sid: str | None = None) -> list[SilenceRow]:
    """Every silence (or the one ``sid``) as its newest version, newest start first."""
    where, params = ("WHERE id = {id:String}", {"id": sid}) if sid else ("", {})
    return [_row(r) for r in store.query(f"SELECT {', '.join(COLUMNS)} FROM silences FINAL {where} "
                                         "ORDER BY starts_at DESC", params, agree=True)]


def active(store, now: dt.datetime) -> list[SilenceRow]:
    """The silences active at ``now``."""
    return [_row(r) for r in store.query(
        f"SELECT {', '.join(COLUMNS)} FROM silences FINAL WHERE starts_at <= {{now:DateTime64(3, 'UTC')}} "
        "AND ends_at > {now:DateTime64(3, 'UTC')}", {"now": now}, agree=True)]


def first_request_hash(store, sid: str) -> str | None:
    """The body digest silence ``sid`` was created with, or None when there is no such silence."""
    found = store.query("SELECT argMin(request_hash, updated_at) FROM silences WHERE id = {id:String} "
                        "HAVING count() > 0", {"id": sid}, agree=True)
    return found[0][0] if found else None


def sync_replica(store) -> None:
    """On a cluster, wait until this replica has every part of the table (a new active scheduler)."""
    store.sync_replica("silences")
