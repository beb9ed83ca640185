"""``leases``: who holds a named lease (the scheduler, a schema upgrade) in which term, until when.

Append-only rows: ``claim`` (one per term survives: every claim of a term is inserted with the
de-duplication token ``lease:<name>:<term>``, so ClickHouse keeps the first and drops the rest,
atomically, on one node and in Keeper on a cluster), ``renew`` (the holder moves its expiry) and
``release``. The holder of a term is its earliest claim by (claimed_at, holder), so a straggler
claim that arrives after the token left the de-duplication window cannot take a term over.
``claimed_at`` is the server's clock (ordering only); ``expires_at`` the candidate's (an
injected clock in tests). Reads and writes run with the store's agreed settings (see Store).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

COLUMNS = ["name", "term", "holder", "kind", "claimed_at", "expires_at"]


@dataclass(frozen=True)
class State:
    term: int               # 0: never claimed
    holder: str             # "" when the term has no claim visible yet
    expires_at: dt.datetime | None
    released: bool


def claim(store, name: str, term: int, holder: str, expires_at: dt.datetime) -> None:
    store.command(
        "INSERT INTO leases (name, term, holder, kind, claimed_at, expires_at) "
        "SELECT {name:String}, {term:UInt64}, {holder:String}, 'claim', now64(6), {exp:DateTime64(6, 'UTC')}",
        {"name": name, "term": term, "holder": holder, "exp": expires_at}, agree=True,
        settings={"insert_deduplication_token": f"lease:{name}:{term}"})


def renew(store, name: str, term: int, holder: str, expires_at: dt.datetime, kind: str = "renew") -> None:
    """A new expiry for the holder's term (``kind='release'``: the holder gives it up)."""
    store.command(
        "INSERT INTO leases (name, term, holder, kind, claimed_at, expires_at) "
        "SELECT {name:String}, {term:UInt64}, {holder:String}, {kind:String}, now64(6), {exp:DateTime64(6, 'UTC')}",
        {"name": name, "term": term, "holder": holder, "kind": kind, "exp": expires_at}, agree=True,
        settings={"insert_deduplication_token": f"lease:{name}:{term}:{kind}:{holder}:{expires_at.isoformat()}"})


def state(store, name: str) -> State:
    """The newest term of ``name``: its holder (earliest claim), the holder's latest expiry, released or not."""
    rows = store.query("""
WITH (SELECT max(term) FROM leases WHERE name = {name:String}) AS newest,
     (SELECT argMin(holder, (claimed_at, holder)) FROM leases
      WHERE name = {name:String} AND term = newest AND kind = 'claim') AS winner
SELECT newest, winner,
       maxIf(expires_at, holder = winner AND kind != 'release') AS expires,
       countIf(holder = winner AND kind = 'release') > 0 AS released,
       countIf(kind = 'claim') AS claims
FROM leases WHERE name = {name:String} AND term = newest""", {"name": name}, agree=True)
    if not rows or not rows[0][0]:
        return State(0, "", None, False)
    term, winner, expires, released, claims = rows[0]
    if not claims:
        return State(int(term), "", None, False)
    return State(int(term), winner, expires, bool(released))


def claims_of(store, name: str, term: int) -> list[str]:
    """Every holder with a claim row for the term (the tests' view: one, whatever the contention)."""
    return [r[0] for r in store.query("SELECT holder FROM leases WHERE name = {name:String} AND term = {term:UInt64} "
                                      "AND kind = 'claim'", {"name": name, "term": term}, agree=True)]
