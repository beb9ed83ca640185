"""``drift_reports``: one row per drift comparison (stratum, window, end): the decision, its
explanation and the Evidently snapshot. The id is stable per comparison, so a rerun replaces its row.

The row's ``summary`` (JSON) is a :class:`DriftSummary` and ``explanation`` a :class:`DriftExplanation`
per text side: the drift job writes them and the pages, the API and the exports read them, through
these types and nothing else.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from monitor.foundation.filters import where_equal

COLUMNS = ["report_id", "ts", "window", "service", "feature", "status", "drift_detected", "reference_from",
           "reference_to", "summary", "explanation", "snapshot", "created_at"]
LIST_COLUMNS = "report_id, ts, window, service, feature, status, drift_detected, reference_from, reference_to, summary"


@dataclass(frozen=True)
class MethodScore:
    """One drift method on one side: its score and vote, or why it could not run."""

    score: float | None
    detected: bool | None
    error: str | None = None


@dataclass(frozen=True)
class SideSummary:
    """The decision for one text side (input or output): the methods' votes, or why it was not decided."""

    detected: bool
    decided: bool
    score: float | None
    min_methods: int
    methods_run: int
    votes: int
    methods: dict[str, MethodScore]
    samples: dict[str, int]           # reference, current: the requests with text on this side
    reason: str | None = None         # why not decided

    @classmethod
    def from_dict(cls, d: dict) -> "SideSummary":
        """Reports written before a side could be left undecided have no ``decided``: they were decided."""
        methods = {m: MethodScore(r.get("score"), r.get("detected"), r.get("error")) for m, r in d.get("methods", {}).items()}
        return cls(bool(d.get("detected")), d.get("decided", True), d.get("score"), d.get("min_methods", 0),
                   d.get("methods_run", sum(1 for r in methods.values() if r.error is None)), d.get("votes", 0),
                   methods, d.get("samples", {}), d.get("reason"))


@dataclass(frozen=True)
class DriftSummary:
    """What one comparison found, beside its points: sample sizes, each side's decision, and what of the
    picture (the Evidently report, the explanation) could not be made."""

    samples: dict[str, int]                               # reference, current: requests sampled
    min_samples: int
    reference: dict[str, str] = field(default_factory=dict)  # from, to (ISO 8601)
    current: dict[str, str] = field(default_factory=dict)
    embedding_source: str = ""
    sides: dict[str, SideSummary] = field(default_factory=dict)
    numeric: dict[str, Any] = field(default_factory=dict)         # value drift of latency, tokens, cost
    report_error: str | None = None                               # the Evidently report could not be drawn
    report_omitted: dict[str, str] = field(default_factory=dict)  # parts of it left out, and why
    explanation_error: dict[str, str] = field(default_factory=dict)
    # Shares per language of the inputs, reference and current, the chi-square test and whether the mix
    # shifted (jobs.drift_methods.language_mix).
    language_mix: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The JSON shape (the column's, and the API's): fields without a value are left out."""
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}

    @classmethod
    def from_json(cls, text: str) -> "DriftSummary | None":
        if not text:
            return None
        d = json.loads(text)
        return cls(d.get("samples", {}), d.get("min_samples", 0), d.get("reference", {}), d.get("current", {}),
                   d.get("embedding_source", ""), {s: SideSummary.from_dict(v) for s, v in d.get("sides", {}).items()},
                   d.get("numeric", {}), d.get("report_error"), d.get("report_omitted", {}),
                   d.get("explanation_error", {}), d.get("language_mix", {}))


@dataclass(frozen=True)
class NovelText:
    text: str
    distance: float                        # 1 - cosine similarity to the nearest reference text
    nearest_reference: str | None = None   # that text


@dataclass(frozen=True)
class NewCluster:
    size: int
    share: float
    examples: list[str]


@dataclass(frozen=True)
class DriftExplanation:
    """What is new on a side that drifted: its texts farthest from the reference, and clusters of them."""

    novel_share: float
    farthest: list[NovelText]
    clusters: list[NewCluster]
    novelty_cutoff: float = 0.0            # a text farther than this from every reference text is new

    @classmethod
    def from_dict(cls, d: dict) -> "DriftExplanation":
        return cls(d.get("novel_share", 0.0),
                   [NovelText(x["text"], x["distance"], x.get("nearest_reference")) for x in d.get("farthest", [])],
                   [NewCluster(c["size"], c["share"], c["examples"]) for c in d.get("clusters", [])],
                   d.get("novelty_cutoff", 0.0))


@dataclass(frozen=True)
class DriftReport:
    """A drift report as stored; ``explanation`` and ``snapshot`` only when asked for (None otherwise)."""

    report_id: str
    ts: dt.datetime
    window: str
    service: str
    feature: str
    status: str                       # ok or insufficient_data
    drift_detected: bool
    reference_from: dt.datetime | None = None
    reference_to: dt.datetime | None = None
    summary: DriftSummary | None = None
    explanation: dict[str, DriftExplanation] | None = None
    snapshot: str | None = None
    has_snapshot: bool | None = None


def _report(r: dict) -> DriftReport:
    explanation = r.get("explanation")
    return DriftReport(
        r["report_id"], r["ts"], r["window"], r["service"], r["feature"], r["status"], bool(r["drift_detected"]),
        r.get("reference_from"), r.get("reference_to"),
        DriftSummary.from_json(r["summary"]) if "summary" in r else None,
        None if explanation is None else {s: DriftExplanation.from_dict(e)
                                          for s, e in (json.loads(explanation) if explanation else {}).items()},
        r.get("snapshot"), bool(r["has_snapshot"]) if "has_snapshot" in r else None)


def _dumps(obj) -> str:
    # Numbers from numpy (scores, distances) are written as the plain numbers they hold.
    return json.dumps(obj, ensure_ascii=False, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def insert(store, report: DriftReport, created_at: dt.datetime) -> None:
    """A new report (a rerun of the same comparison replaces it: the same id)."""
    row = {**{k: getattr(report, k) for k in ("report_id", "ts", "window", "service", "feature", "status",
                                               "drift_detected", "reference_from", "reference_to")},
           "summary": _dumps(report.summary.as_dict()) if report.summary else "",
           "explanation": _dumps({s: asdict(e) for s, e in report.explanation.items()}) if report.explanation else "",
           "snapshot": report.snapshot or "", "created_at": created_at}
    store.insert("drift_reports", [[row[c] for c in COLUMNS]], COLUMNS)


def search(store, equal: dict[str, str], detected: bool | None, lo: dt.datetime | None, hi: dt.datetime | None,
           limit: int) -> list[DriftReport]:
    """Reports (LIST_COLUMNS), newest first, with these column values, decision and ``ts`` in [lo, hi)."""
    conditions, params = where_equal(equal, ("service", "feature", "window", "status"))
    where, params["limit"] = ["1" + conditions], limit
    if detected is not None:
        where.append("drift_detected = {detected:Bool}")
        params["detected"] = detected
    for name, op, ts in (("from", ">=", lo), ("to", "<", hi)):
        if ts is not None:
            where.append(f"ts {op} toDateTime64({{{name}:Float64}}, 3, 'UTC')")
            params[name] = ts.timestamp()
    return [_report(r) for r in store.query_dicts(
        f"SELECT {LIST_COLUMNS} FROM drift_reports FINAL WHERE {' AND '.join(where)} "
        "ORDER BY ts DESC, service, feature, window LIMIT {limit:UInt32}", params)]


def get(store, report_id: str, explanation: bool = False, snapshot: bool = False) -> DriftReport | None:
    """One report (LIST_COLUMNS), with its explanation and its Evidently snapshot when asked for."""
    columns = LIST_COLUMNS + (", explanation" if explanation else "") + (", snapshot" if snapshot else "")
    rows = store.query_dicts(
        f"SELECT {columns} FROM drift_reports FINAL WHERE report_id = {{id:String}} LIMIT 1", {"id": report_id})
    return _report(rows[0]) if rows else None


def runs(store, lo: dt.datetime, hi: dt.datetime, equal: dict[str, str], limit: int = 200) -> list[DriftReport]:
    """Reports ending in (lo, hi] with these column values, newest first, with their summary and
    explanation and whether a snapshot exists (not the snapshot itself)."""
    where, params = where_equal(equal, ("service", "feature"))
    params.update(lo=lo, hi=hi)
    return [_report(r) for r in store.query_dicts(
        "SELECT report_id, ts, window, service, feature, status, drift_detected, summary, explanation, "
        "snapshot != '' AS has_snapshot FROM drift_reports FINAL "
        "WHERE ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}" + where +
        f" ORDER BY ts DESC, service, feature, window LIMIT {int(limit)}", params)]


@dataclass(frozen=True)
class StratumDrift:
    """The newest report of one (service, feature) in a period: what the overview shows."""

    service: str
    feature: str
    report_id: str
    status: str
    detected: bool
    last_ts: dt.datetime
    last_window: str


def latest_per_stratum(store, lo: dt.datetime, hi: dt.datetime) -> list[StratumDrift]:
    """The newest report per (service, feature) ending in (lo, hi], preferring full-day windows."""
    return [StratumDrift(r["service"], r["feature"], r["report_id"], r["status"], bool(r["detected"]), r["last_ts"],
                         r["last_window"]) for r in store.query_dicts(
        "SELECT service, feature, argMax(report_id, (window = '1d', ts)) AS report_id, "
        "argMax(status, (window = '1d', ts)) AS status, argMax(drift_detected, (window = '1d', ts)) AS detected, "
        "argMax(ts, (window = '1d', ts)) AS last_ts, argMax(window, (window = '1d', ts)) AS last_window "
        "FROM drift_reports FINAL WHERE ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')} "
        "GROUP BY service, feature", {"lo": lo, "hi": hi})]


def ending_between(store, lo: dt.datetime, hi: dt.datetime, where: str, params: dict) -> list[DriftReport]:
    """Reports ending in (lo, hi], oldest first, without their summary; ``where`` filters (conditions
    starting with AND)."""
    return [_report(r) for r in store.query_dicts(
        "SELECT report_id, ts, window, service, feature, status, drift_detected "
        "FROM drift_reports FINAL WHERE ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}"
        + where + " ORDER BY ts", {**params, "lo": lo, "hi": hi})]
