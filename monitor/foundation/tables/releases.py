"""``releases``: each change of a feature's prompt version, model or other release dimension, newest version
of each row by ``updated_at``.

Statements only: finding releases and judging them is the ``releases`` job's (jobs/releases.py); POST
/v1/releases declares one; the pages and GET /v1/releases read them. ``metrics`` holds the per-metric
statistics as the job wrote them (a JSON object keyed by metric name).

It also reads what a release is judged on: the hourly requests per value of a release dimension (the
requests_1h and segments_1h rollups), and each side's raw requests and feedback (bounded: a side is a value
over a set of hours, its samples capped).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np

COLUMNS = ["release_id", "service", "feature", "dimension", "value", "previous_value", "ts", "source", "description",
           "link", "mode", "full_rollout", "ended", "rollback_of", "verdict", "reason", "metrics", "judged_from",
           "judged_to", "updated_at"]
VERDICTS = ("pending", "insufficient_data", "pass", "marginal", "fail")
# A declared release (POST /v1/releases) and the detected start of its value this close are one release,
# whichever came first.
DECLARED_MATCH = dt.timedelta(hours=3)


@dataclass(frozen=True)
class Release:
    release_id: str
    service: str
    feature: str
    dimension: str
    value: str
    previous_value: str
    ts: dt.datetime                      # when the new value started taking traffic (or the declared time)
    source: str = "detected"             # detected | declared
    description: str = ""
    link: str = ""
    mode: str = ""                       # canary | before_after ("" until traffic tells)
    full_rollout: dt.datetime | None = None  # when the previous value stopped taking traffic
    ended: dt.datetime | None = None     # when the new value stopped (a later release replaced it)
    rollback_of: str = ""                # the release this one reverts
    verdict: str = "pending"
    reason: str = ""
    metrics: dict = field(default_factory=dict)
    judged_from: dt.datetime | None = None
    judged_to: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def with_(self, **changes) -> "Release":
        return replace(self, **changes)


def release_id(service: str, feature: str, dimension: str, value: str, ts: dt.datetime) -> str:
    """Stable for the same change found again: the feature, the dimension, the value and its start."""
    key = "\x1f".join((service, feature, dimension, value, ts.astimezone(dt.timezone.utc).isoformat()))
    return "rel-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _values(r: Release, now: dt.datetime) -> list:
    return [r.release_id, r.service, r.feature, r.dimension, r.value, r.previous_value, r.ts, r.source,
            r.description, r.link, r.mode, r.full_rollout, r.ended, r.rollback_of, r.verdict, r.reason,
            json.dumps(r.metrics, sort_keys=True), r.judged_from, r.judged_to, now]


def _row(values) -> Release:
    d = dict(zip(COLUMNS, values))
    d["metrics"] = json.loads(d["metrics"] or "{}")
    return Release(**d)


def write(store, rows: list[Release], now: dt.datetime) -> None:
    """New versions of these releases (the newest ``updated_at`` wins)."""
    if rows:
        store.insert("releases", [_values(r, now) for r in rows], COLUMNS)


def get(store, rid: str) -> Release | None:
    found = store.query(f"SELECT {', '.join(COLUMNS)} FROM releases FINAL WHERE release_id = {{id:String}}",
                        {"id": rid})
    return _row(found[0]) if found else None


def search(store, *, service: str = "", feature: str = "", dimension: str = "", lo: dt.datetime | None = None,
           hi: dt.datetime | None = None, limit: int = 1000) -> list[Release]:
    """Releases started in [lo, hi) (either end open), oldest first."""
    conds, params = [], {"limit": limit}
    for name, value in (("service", service), ("feature", feature), ("dimension", dimension)):
        if value:
            conds.append(f"{name} = {{{name}:String}}")
            params[name] = value
    if lo is not None:
        conds.append("ts >= {lo:DateTime64(3, 'UTC')}")
        params["lo"] = lo
    if hi is not None:
        conds.append("ts < {hi:DateTime64(3, 'UTC')}")
        params["hi"] = hi
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    return [_row(r) for r in store.query(
        f"SELECT {', '.join(COLUMNS)} FROM releases FINAL {where} ORDER BY ts, release_id LIMIT {{limit:UInt32}}",
        params)]


# -- what a release is judged on ---------------------------------------------------------------------------
ROLLUP_DIMENSIONS = ("model", "prompt_version", "environment", "region")


def hourly_values(store, dimension: str, lo: dt.datetime, hi: dt.datetime) -> dict[tuple[str, str], dict]:
    """(service, feature) -> hour -> value -> requests of ``dimension`` (a column of the hourly rollup or a
    promoted tag) over [lo, hi)."""
    params = {"lo": lo, "hi": hi}
    if dimension in ROLLUP_DIMENSIONS:
        sql = (f"SELECT service, feature, minute, toString({dimension}) AS v, sum(requests) FROM requests_1h "
               "WHERE minute >= {lo:DateTime} AND minute < {hi:DateTime} GROUP BY service, feature, minute, v")
    else:
        sql = ("SELECT service, feature, minute, toString(value) AS v, sum(requests) FROM segments_1h "
               "WHERE dimension = {dim:String} AND minute >= {lo:DateTime} AND minute < {hi:DateTime} "
               "GROUP BY service, feature, minute, v")
        params["dim"] = dimension
    out: dict[tuple[str, str], dict] = {}
    for service, feature, hour, value, n in store.query(sql, params):
        out.setdefault((service, feature), {}).setdefault(hour, {})[value] = int(n)
    return out


def first_request(store, service: str, feature: str, dimension_sql: str, value: str, hour: dt.datetime):
    """The first request of ``value`` in the hour starting at ``hour`` (a release's start, to the ms)."""
    return store.scalar(
        f"SELECT min(ts) FROM requests WHERE service = {{s:String}} AND feature = {{f:String}} AND "
        f"toString({dimension_sql}) = {{v:String}} AND ts >= {{lo:DateTime64(3, 'UTC')}} AND "
        "ts < {lo:DateTime64(3, 'UTC')} + INTERVAL 1 HOUR",
        {"s": service, "f": feature, "v": value, "lo": hour})


@dataclass
class Side:
    """One value of a release over its hours: whole counts, and capped samples of the per-request values."""
    requests: int = 0
    errors: int = 0
    latency: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ttft: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ttft_n: int = 0
    cost: np.ndarray = field(default_factory=lambda: np.zeros(0))
    success: np.ndarray = field(default_factory=lambda: np.zeros(0))
    output_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ok: int = 0
    thumbs: int = 0
    thumbs_up: int = 0
    tasks: int = 0
    tasks_ok: int = 0
    reviews: int = 0
    hallucinated: int = 0
    outputs: list[str] = field(default_factory=list)


def side(store, service: str, feature: str, dimension_sql: str, value: str, hours: list[dt.datetime], *,
         cap: int, statuses: list[str], negative: str, texts: int = 0) -> Side:
    """``value``'s requests (and their feedback) in ``hours`` (hour starts), with samples of at most ``cap``
    requests drawn by the hash of their id (the same requests on every run); ``texts`` output texts."""
    out = Side()
    if not hours:
        return out
    params = {"s": service, "f": feature, "v": value, "hours": sorted(hours), "lo": min(hours),
              "hi": max(hours) + dt.timedelta(hours=1), "statuses": statuses, "cap": cap, "texts": texts}
    where = ("service = {{s:String}} AND feature = {{f:String}} AND toString(" + dimension_sql + ") = {{v:String}} "
             "AND {t} >= {{lo:DateTime64(3, 'UTC')}} AND {t} < {{hi:DateTime64(3, 'UTC')}} "
             "AND toStartOfHour({t}) IN {{hours:Array(DateTime('UTC'))}}")
    req = where.format(t="ts")
    fb = where.format(t="request_ts")
    counts = store.query(f"SELECT count(), countIf(status IN ('error', 'timeout')), countIf(ttft_ms IS NOT NULL), "
                         f"countIf(status = 'ok') FROM requests WHERE {req}", params)[0]
    out.requests, out.errors, out.ttft_n, out.ok = (int(x) for x in counts)
    if not out.requests:
        return out
    rows = store.query(
        f"SELECT latency_ms, ttft_ms, cost_usd, status IN {{statuses:Array(String)}} AND request_id NOT IN "
        f"(SELECT request_id FROM feedback WHERE ({negative}) AND {fb}) AS success, status = 'ok', output_tokens "
        f"FROM requests WHERE {req} ORDER BY cityHash64(request_id) LIMIT {{cap:UInt32}}", params)
    if rows:
        latency, ttft, cost, success, ok, tokens = zip(*rows)
        out.latency = np.asarray(latency, dtype=float)
        out.ttft = np.asarray([t for t in ttft if t is not None], dtype=float)
        out.cost = np.asarray(cost, dtype=float)
        out.success = np.asarray(success, dtype=float)
        out.output_tokens = np.asarray([t for t, k in zip(tokens, ok) if k], dtype=float)
    f = store.query(
        "SELECT countIf(kind = 'thumbs'), countIf(kind = 'thumbs' AND value = 1), countIf(kind = 'task_success'), "
        "countIf(kind = 'task_success' AND value = 1) FROM feedback FINAL WHERE kind IN ('thumbs', 'task_success') "
        f"AND {fb}", params)[0]
    out.thumbs, out.thumbs_up, out.tasks, out.tasks_ok = (int(x) for x in f)
    # A reviewed request's verdict is its reviewers' majority, as the review queue's and the hallucination job's.
    h = store.query(
        "SELECT countIf(h > g), countIf(h > g OR g > h) FROM (SELECT request_id, countIf(label = 'hallucinated') AS h, "
        "countIf(label = 'grounded') AS g FROM feedback FINAL WHERE kind = 'hallucination' AND source = 'reviewer' "
        f"AND {fb} GROUP BY request_id)", params)[0]
    out.hallucinated, out.reviews = int(h[0]), int(h[1])
    if texts:
        out.outputs = [r[0] for r in store.query(
            f"SELECT output_text FROM requests WHERE {req} AND status = 'ok' AND output_text != '' "
            "ORDER BY cityHash64(request_id) LIMIT {texts:UInt32}", params)]
    return out
