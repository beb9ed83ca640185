"""``requests``: one row per model request, as stored (validated, redacted, priced).

A ReplacingMergeTree keyed on request_id, partitioned by UTC day
(``toYYYYMMDD(ts)``), with a skip index on ``halfMD5(request_id)``: a lookup by
id names both the hash (to find the granule) and the id (to be exact).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import NamedTuple, Sequence

from monitor.foundation.rollups import STATUS_COLUMNS
from monitor.foundation.tables._raw import deduplicated, half_md5, stored_ids

COLUMNS = [
    "request_id", "ts", "service", "feature", "model", "provider", "prompt_version", "environment", "region",
    "language", "language_source", "tenant", "status", "error_type", "http_status", "latency_ms", "ttft_ms", "input_tokens",
    "output_tokens", "cached_input_tokens", "cost_usd", "cost_source", "input_text", "output_text",
    "context_text", "text_truncated", "retrieval_hit", "grounded", "cache_hit", "safety_flagged",
    "pii_detected", "injection_detected", "user_id_hash", "session_id", "tags", "segment_tags", "input_embedding", "ingested_at",
    "dimension_overflow",
]
# A request's dimensions, which its feedback rows carry too (so rollups attribute feedback without a join,
# and feedback is read per segment from its own rows), with the value a feedback row without its request holds.
CONTEXT = {"service": "", "feature": "", "model": "", "prompt_version": "", "environment": "", "region": "",
           "language": "", "tenant": "", "segment_tags": {}}


# The hash space of the deterministic samples (the review queue's, the evaluators'): cityHash64(request_id) % it
# under a stratum's rate times it is sampled, so a lower rate's sample is inside a higher one's.
SAMPLE_HASH_SPACE = 1_000_000


# -- writing and finding by id ------------------------------------------------------------
def insert(store, rows: Sequence[dict], token: str | None = None) -> None:
    """``token``: the batch's de-duplication token (the rows must fall in one partition, see partition_of)."""
    if rows:
        store.insert_columns("requests", [[r[c] for r in rows] for c in COLUMNS], COLUMNS, settings=deduplicated(token))


def partition_of(row: dict) -> str:
    """The row's partition (the table's PARTITION BY), so an insert with a token covers one block:
    a retry of part of a batch then carries the same token as that part did."""
    return row["ts"].strftime("%Y%m%d")


def existing_ids(store, ids) -> set[str]:
    return stored_ids(store, "requests", "request_id", ids)


@dataclass(frozen=True)
class StoredRequest:
    """One request as stored (redacted, the user id hashed), every column but the embedding; dimensions
    with their real values, ``counted_as_overflow`` naming those the rollups count under the overflow value."""

    request_id: str
    ts: dt.datetime
    service: str
    feature: str
    model: str
    provider: str
    prompt_version: str
    environment: str
    region: str
    language: str
    language_source: str  # sent | detected | undetermined (monitor.ingest.language); "" before 0011
    tenant: str
    status: str
    error_type: str
    http_status: int
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: float
    cost_source: str
    input_text: str
    output_text: str
    context_text: str
    text_truncated: bool
    retrieval_hit: bool | None
    grounded: bool | None
    cache_hit: bool
    safety_flagged: bool
    pii_detected: bool
    injection_detected: bool
    user_id_hash: str
    session_id: str
    tags: dict[str, str]
    segment_tags: dict[str, str]  # the tags segments.tags promotes, as the budget admitted them (0012)
    ingested_at: dt.datetime
    counted_as_overflow: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The API's shape: every field, ``counted_as_overflow`` only when a dimension was."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if not self.counted_as_overflow:
            del out["counted_as_overflow"]
        else:
            out["counted_as_overflow"] = list(self.counted_as_overflow)
        return out


def get(store, request_id: str) -> StoredRequest | None:
    """One request, or None."""
    rows = store.query_dicts("SELECT * EXCEPT (input_embedding) FROM requests FINAL "
                             "WHERE halfMD5(request_id) = halfMD5({id:String}) AND request_id = {id:String} "
                             "LIMIT 1", {"id": request_id})
    if not rows:
        return None
    row = rows[0]
    real = row.pop("dimension_overflow") or {}
    return StoredRequest(**{**row, **real}, counted_as_overflow=tuple(sorted(real)))


def context_of(store, ids) -> dict[str, dict]:
    """request_id -> {request_id, ts, status, and the CONTEXT dimensions} for the ids that are stored."""
    ids = set(ids)
    if not ids:
        return {}
    found = {}
    for rec in store.query_dicts(
            "SELECT request_id, ts, status, " + ", ".join(CONTEXT) + " FROM requests "
            "WHERE halfMD5(request_id) IN {hashes:Array(UInt64)} LIMIT 1 BY request_id",
            {"hashes": [half_md5(i) for i in ids]}):
        if rec["request_id"] in ids:
            found[rec["request_id"]] = rec
    return found


def missing_texts(store, ids) -> dict[str, set[str]]:
    """request_id -> which of ``input_text`` and ``output_text`` the stored request is without, for the ids
    that are stored (what OpenTelemetry content arriving after its request could have given it)."""
    ids = set(ids)
    if not ids:
        return {}
    found = {}
    for request_id, no_input, no_output in store.query(
            "SELECT request_id, input_text = '', output_text = '' FROM requests "
            "WHERE halfMD5(request_id) IN {hashes:Array(UInt64)} LIMIT 1 BY request_id",
            {"hashes": [half_md5(i) for i in ids]}):
        if request_id in ids:
            found[request_id] = {name for name, missing in (("input_text", no_input), ("output_text", no_output))
                                 if missing}
    return found


def count(store) -> int:
    return int(store.scalar("SELECT count() FROM requests") or 0)


class TimeSpan(NamedTuple):
    oldest: dt.datetime
    newest: dt.datetime


def time_span(store) -> TimeSpan | None:
    """The oldest and newest ts, or None when the table is empty."""
    lo, hi, n = store.query("SELECT min(ts), max(ts), count() FROM requests")[0]
    return TimeSpan(lo, hi) if n else None


# -- samples for the jobs --------------------------------------------------------------------
def answered_strata(store, lo: dt.datetime, hi: dt.datetime) -> list[tuple[str, str]]:
    """(service, feature) with answered requests in [lo, hi)."""
    return [tuple(r) for r in store.query(
        "SELECT service, feature FROM requests WHERE ts >= toDateTime({lo:UInt32}, 'UTC') "
        "AND ts < toDateTime({hi:UInt32}, 'UTC') AND output_text != '' GROUP BY service, feature "
        "ORDER BY service, feature", {"lo": int(lo.timestamp()), "hi": int(hi.timestamp())})]


def drift_sample(store, service: str, feature: str, lo: dt.datetime, hi: dt.datetime, n: int) -> list[dict]:
    """Up to ``n`` answered requests of a stratum in [lo, hi): the lowest cityHash64(request_id), so a
    rerun draws the same requests. (A side without text, e.g. no input, is left out by the job itself.)
    A request stored twice (two API processes racing on one batch: the same event) is drawn once, by
    LIMIT 1 BY rather than FINAL, which merged the window's parts to find such copies: 40% of the read."""
    return store.query_dicts("""
SELECT request_id, input_text, output_text, input_embedding, latency_ms, input_tokens, output_tokens, cost_usd
FROM requests
WHERE service = {s:String} AND feature = {f:String}
  AND ts >= toDateTime64({lo:Float64}, 3, 'UTC') AND ts < toDateTime64({hi:Float64}, 3, 'UTC')
  AND output_text != ''
ORDER BY cityHash64(request_id), request_id
LIMIT 1 BY request_id
LIMIT {n:UInt32}""", {"s": service, "f": feature, "lo": lo.timestamp(), "hi": hi.timestamp(), "n": n})


class ReviewCandidate(NamedTuple):
    service: str
    feature: str
    request_id: str
    ts: dt.datetime
    by_rate: bool        # chosen by its stratum's rate (else: to reach the daily minimum)
    output_text: str
    context_text: str


def review_sample(store, lo: dt.datetime, hi: dt.datetime, space: int, rates: dict[str, int], default: int,
                  minimum: int) -> list[ReviewCandidate]:
    """The answered requests in [lo, hi) to queue for review.

    A request is chosen when cityHash64(request_id) % space falls under its stratum's rate
    (``rates`` keyed "service/feature" or "service", else ``default``), and each (service,
    feature) also gets its ``minimum`` lowest hashes: deterministic, so a rerun chooses the same.
    """
    return [ReviewCandidate(*r) for r in store.query("""
SELECT service, feature, request_id, ts, h < rate AS by_rate, output_text, context_text
FROM (
    SELECT service, feature, request_id, ts, output_text, context_text, cityHash64(request_id) % {space:UInt64} AS h,
           indexOf({keys:Array(String)}, concat(service, '/', feature)) AS by_feature,
           indexOf({keys:Array(String)}, toString(service)) AS by_service,
           multiIf(by_feature > 0, {rates:Array(UInt64)}[by_feature],
                   by_service > 0, {rates:Array(UInt64)}[by_service], {default:UInt64}) AS rate,
           row_number() OVER (PARTITION BY service, feature ORDER BY h, request_id) AS rank
    FROM requests FINAL
    WHERE ts >= toDateTime({lo:UInt32}, 'UTC') AND ts < toDateTime({hi:UInt32}, 'UTC') AND output_text != ''
)
WHERE h < rate OR rank <= {minimum:UInt32}""", {
        "space": space, "keys": list(rates), "rates": list(rates.values()), "default": default,
        "minimum": minimum, "lo": int(lo.timestamp()), "hi": int(hi.timestamp())})]


class AnswerWithContext(NamedTuple):
    service: str
    feature: str
    output_text: str
    context_text: str


def grounding_sample(store, lo: dt.datetime, hi: dt.datetime, n: int) -> list[AnswerWithContext]:
    """Up to ``n`` answers with context per (service, feature) in [lo, hi), the lowest cityHash64 of the
    id first; a request stored twice once (as drift_sample: LIMIT 1 BY, not FINAL, which made the read 8x
    slower)."""
    return [AnswerWithContext(*r) for r in store.query("""
SELECT service, feature, output_text, context_text FROM (
    SELECT service, feature, output_text, context_text,
           row_number() OVER (PARTITION BY service, feature ORDER BY cityHash64(request_id), request_id) AS rank
    FROM (SELECT service, feature, request_id, output_text, context_text FROM requests
          WHERE ts >= toDateTime({lo:UInt32}, 'UTC') AND ts < toDateTime({hi:UInt32}, 'UTC')
            AND output_text != '' AND context_text != ''
          LIMIT 1 BY request_id))
WHERE rank <= {n:UInt32}""", {"lo": int(lo.timestamp()), "hi": int(hi.timestamp()), "n": n})]


# -- lists for the incident explorer -----------------------------------------------------------
# Its lists name these columns, with the question as a snippet of {snip:UInt32} characters.
# Dimensions show their real values (the overflow value only counts them); the queries that name
# these set prefer_column_name_to_alias, so their filters still mean the stored (counted) columns.
_REAL = ", ".join(f"if(mapContains(dimension_overflow, '{d}'), dimension_overflow['{d}'], {d}) AS {d}"
                  for d in ("service", "feature", "model", "prompt_version"))
LIST_COLUMNS = (f"request_id, ts, {_REAL}, status, error_type, http_status, latency_ms, ttft_ms, cost_usd, "
                "substring(input_text, 1, {snip:UInt32}) AS input_snippet")


class ErrorTypeCount(NamedTuple):
    error_type: str
    failed: int


@dataclass(frozen=True)
class RequestBrief:
    """A request as the incident explorer lists it (LIST_COLUMNS): the question as a snippet."""

    request_id: str
    ts: dt.datetime
    service: str
    feature: str
    model: str
    prompt_version: str
    status: str
    error_type: str
    http_status: int | None
    latency_ms: float
    ttft_ms: float | None
    cost_usd: float
    input_snippet: str


def _days(lo: dt.datetime, hi: dt.datetime) -> tuple[list[str], list[tuple[dt.datetime, dt.datetime]]]:
    """[lo, hi) as whole UTC days (partition ids) and the partial days at its ends."""
    day = dt.timedelta(days=1)
    first = lo.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < lo:
        first += day
    last = hi.replace(hour=0, minute=0, second=0, microsecond=0)
    if first >= last:
        return [], [(lo, hi)]
    days, t = [], first
    while t < last:
        days.append(t.strftime("%Y%m%d"))
        t += day
    return days, [(a, b) for a, b in ((lo, first), (last, hi)) if a < b]


def _by_partition(lo: dt.datetime, hi: dt.datetime, columns: str, where: str) -> tuple[str, dict]:
    """A FROM clause over the rows of [lo, hi), reading whole days by partition.

    Naming a whole day's partition selects its parts without reading ts, which is most of
    the cost of scanning a long window. ``where`` (conditions starting with AND) applies to every piece.
    """
    days, edges = _days(lo, hi)
    parts, params = [], {}
    if days:
        parts.append(f"SELECT {columns} FROM requests WHERE _partition_id IN {{days:Array(String)}}{where}")
        params["days"] = days
    for i, (a, b) in enumerate(edges):
        parts.append(f"SELECT {columns} FROM requests WHERE ts >= {{elo{i}:DateTime64(3, 'UTC')}} "
                     f"AND ts < {{ehi{i}:DateTime64(3, 'UTC')}}{where}")
        params[f"elo{i}"], params[f"ehi{i}"] = a, b
    return "(" + " UNION ALL ".join(parts) + ")", params


def failures_by_model_and_prompt(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict) -> list[dict]:
    """The rows of tables.rollups.failures_by_model_and_prompt, counted from the raw rows: for filters the
    request rollups cannot apply (a segment: a language, tenant or promoted tag)."""
    src, p = _by_partition(lo, hi, "model, prompt_version, status", where)
    return store.query_dicts(
        "SELECT grouping(model, prompt_version) AS g, model, prompt_version, count() AS requests, "
        "countIf(status != 'ok') AS failed, "
        + ", ".join(f"countIf(status = '{s}') AS {c}" for s, c in STATUS_COLUMNS.items() if s != "ok") +
        f" FROM {src} GROUP BY GROUPING SETS ((model), (prompt_version), ())", {**params, **p})


def failures_by_error_type(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict,
                           limit: int = 15) -> list[ErrorTypeCount]:
    """Failed requests per error_type in [lo, hi), most first; ``where`` filters (starting with AND)."""
    src, p = _by_partition(lo, hi, "error_type", where + " AND status != 'ok'")
    return [ErrorTypeCount(*r) for r in store.query(
        f"SELECT error_type, count() AS k FROM {src} GROUP BY error_type ORDER BY k DESC LIMIT {int(limit)}",
        {**params, **p})]


def failing(store, since: dt.datetime, hi: dt.datetime, where: str, params: dict, limit: int) -> list[RequestBrief]:
    """The newest failed (error, timeout) requests in [since, hi)."""
    return [RequestBrief(**r) for r in store.query_dicts(
        f"SELECT {LIST_COLUMNS} FROM requests WHERE ts >= {{since:DateTime64(3, 'UTC')}} "
        "AND ts < {hi:DateTime64(3, 'UTC')}" + where + " AND status IN ('error', 'timeout') "
        "ORDER BY ts DESC LIMIT {limit:UInt32} SETTINGS prefer_column_name_to_alias = 1",
        {**params, "since": since, "hi": hi, "limit": limit})]


def slowest(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict, limit: int,
            floor: float | None = None) -> list[RequestBrief]:
    """The slowest requests in [lo, hi). One table and a plain ORDER BY ... LIMIT, so ClickHouse reads
    the other columns (texts included) only for the rows it keeps (lazy materialization). ``floor``: a
    latency at least ``limit`` requests of the window exceed (the rollups' histogram says which), so only
    the latency column is read for the others; with fewer rows above it, the window is read whole."""
    def read(cond: str) -> list[RequestBrief]:
        return [RequestBrief(**r) for r in store.query_dicts(
            f"SELECT {LIST_COLUMNS} FROM requests WHERE ts >= {{lo:DateTime64(3, 'UTC')}} "
            f"AND ts < {{hi:DateTime64(3, 'UTC')}}{where}{cond} ORDER BY latency_ms DESC LIMIT {{limit:UInt32}} "
            "SETTINGS prefer_column_name_to_alias = 1",
            {**params, "lo": lo, "hi": hi, "limit": limit, "floor": floor})]
    rows = read(" AND latency_ms > {floor:Float64}") if floor is not None else []
    return rows if len(rows) >= limit else read("")
