"""``evaluations``: each sampled answer an automated evaluator was asked about, newest outcome by
``evaluated_at`` (``labelled`` and ``parse_failure`` are final for the evaluator's prompt version; ``failed`` is
asked again by a later run).

Statements only: asking the judge is the ``evaluate`` job's (jobs/evaluate.py). It also reads the answers to
ask about: the requests whose ``cityHash64(request_id)`` falls under the evaluator's rate, the review queue's
hash (requests.review_sample), so a judge and the reviewers see overlapping items.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import astuple, dataclass
from typing import NamedTuple

# The service the judges' own calls are recorded under (their cost and latency show like any feature's).
EVALUATOR_SERVICE = "nlpmon-evaluators"
FINAL = ("labelled", "parse_failure")

COLUMNS = ["evaluator", "prompt_version", "request_id", "service", "feature", "request_ts", "evaluated_at", "status",
           "label", "reason", "attempts", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "error"]


@dataclass(frozen=True)
class Evaluation:
    evaluator: str
    prompt_version: str
    request_id: str
    service: str
    feature: str
    request_ts: dt.datetime
    evaluated_at: dt.datetime
    status: str          # labelled | parse_failure | failed
    label: str = ""
    reason: str = ""
    attempts: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    error: str = ""


def write(store, rows: list[Evaluation]) -> None:
    if rows:
        store.insert("evaluations", [astuple(r) for r in rows], COLUMNS)


class Candidate(NamedTuple):
    request_id: str
    ts: dt.datetime
    service: str
    feature: str
    input_text: str
    context_text: str
    output_text: str


_SAMPLED = """FROM requests FINAL
WHERE ts >= {lo:DateTime64(6, 'UTC')} AND ts < {hi:DateTime64(6, 'UTC')} AND output_text != ''
  AND service != {own:String} AND cityHash64(request_id) % {space:UInt64} < {under:UInt64}
  AND (empty({services:Array(String)}) OR has({services:Array(String)}, toString(service)))
  AND (empty({features:Array(String)}) OR has({features:Array(String)}, toString(feature)))
  AND request_id NOT IN (SELECT request_id FROM evaluations FINAL WHERE evaluator = {evaluator:String}
                         AND prompt_version = {version:String} AND status IN {final:Array(String)})"""


def _params(evaluator, version, lo, hi, space, under, services, features) -> dict:
    return {"lo": lo, "hi": hi, "own": EVALUATOR_SERVICE, "space": space, "under": under, "services": services,
            "features": features, "evaluator": evaluator, "version": version, "final": list(FINAL)}


def candidates(store, evaluator: str, version: str, lo: dt.datetime, hi: dt.datetime, space: int, under: int,
               services: list[str], features: list[str], limit: int,
               after: tuple[dt.datetime, str] | None = None) -> list[Candidate]:
    """Answered requests in [lo, hi) after ``after`` (ts, request_id), oldest first, whose hash falls under
    ``under`` of ``space``, of the listed services and features (empty: all), that this evaluator's prompt
    version has no final outcome for; never the judges' own calls."""
    params = _params(evaluator, version, lo, hi, space, under, services, features)
    params.update(limit=limit, ats=after[0] if after else lo, aid=after[1] if after else "")
    return [Candidate(*r) for r in store.query(
        "SELECT request_id, ts, service, feature, input_text, context_text, output_text " + _SAMPLED +
        " AND (ts, request_id) > ({ats:DateTime64(6, 'UTC')}, {aid:String}) ORDER BY ts, request_id "
        "LIMIT {limit:UInt32}", params)]


def waiting(store, evaluator: str, version: str, lo: dt.datetime, hi: dt.datetime, space: int, under: int,
            services: list[str], features: list[str]) -> int:
    """How many of candidates()'s answers are still to ask."""
    return int(store.query("SELECT count() " + _SAMPLED,
                           _params(evaluator, version, lo, hi, space, under, services, features))[0][0])


class Usage(NamedTuple):
    calls: int          # calls made since ``hour``
    cost_usd: float     # the judge's cost since ``day``


def usage(store, evaluator: str, hour: dt.datetime, day: dt.datetime) -> Usage:
    """What the caps count: this evaluator's calls since ``hour`` and its cost since ``day`` (``hour`` within
    ``day``; each asked
    request once: a failed call asked again later counts as the later one)."""
    calls, cost = store.query(
        "SELECT countIf(evaluated_at >= {hour:DateTime64(6, 'UTC')}), sum(cost_usd) FROM evaluations FINAL "
        "WHERE evaluator = {evaluator:String} AND evaluated_at >= {day:DateTime64(6, 'UTC')}",
        {"evaluator": evaluator, "hour": hour, "day": day})[0]
    return Usage(int(calls), float(cost or 0.0))


@dataclass
class Counts:
    """An evaluator's outcomes over a span, by when it was asked."""
    evaluator: str
    calls: int = 0
    labelled: int = 0
    parse_failures: int = 0
    failed: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms_avg: float | None = None
    last: dt.datetime | None = None


def counts(store, lo: dt.datetime, hi: dt.datetime) -> dict[str, Counts]:
    return {r["evaluator"]: Counts(**r) for r in store.query_dicts(
        "SELECT evaluator, count() AS calls, countIf(status = 'labelled') AS labelled, "
        "countIf(status = 'parse_failure') AS parse_failures, countIf(status = 'failed') AS failed, "
        "toInt64(sum(attempts - 1)) AS retries, toInt64(sum(input_tokens)) AS input_tokens, "
        "toInt64(sum(output_tokens)) AS output_tokens, sum(cost_usd) AS cost_usd, "
        "if(count() > 0, avg(latency_ms), NULL) AS latency_ms_avg, max(evaluated_at) AS last "
        "FROM evaluations FINAL WHERE evaluated_at >= {lo:DateTime64(6, 'UTC')} AND evaluated_at < {hi:DateTime64(6, 'UTC')} "
        "GROUP BY evaluator", {"lo": lo, "hi": hi})}
