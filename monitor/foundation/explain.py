"""What changed: a metric's change between two windows, split over the segments of each dimension.

A metric here is a ratio of sums, R = num / den (an error rate: failures over requests; cost per request:
cost over requests; a percentile through the share of requests slower than the baseline's percentile).
For any partition of the traffic into segments s (the values of one dimension, or of a pair), with w_s the
segment's share of the denominator and r_s its own ratio:

    R_cur - R_base = sum_s (w_cur,s r_cur,s - w_base,s r_base,s) = sum_s (rate_s + mix_s)
    rate_s = (r_cur,s - r_base,s) (w_cur,s + w_base,s) / 2            the value inside the segment moved
    mix_s  = (w_cur,s - w_base,s) ((r_cur,s + r_base,s) / 2 - R_base)  its share of traffic moved

(the shift-share split; the mix terms sum to zero over the segments whatever the reference subtracted, since
the shares of each window sum to 1, so the contributions sum to the change exactly). The reference is the
baseline's whole: traffic that moved to a segment counts by how far the segment is from what the traffic
was before, so a value that replaced another (prompt v8 for v7) carries the whole change, and the value it
replaced, which was the baseline, none of it. A segment absent from a window keeps its other window's
value (only its share moved). A segment's ``share`` is its
contribution over the whole change, clipped to 0..1. It is a contributor when its share is at least
MIN_SHARE and it holds more of the change than of the traffic (``lift``, share over its current share of
the traffic, at least MIN_LIFT), or mostly through its share of traffic moving by MIN_MIX_SHIFT at least
(traffic moved to a pricier model): a segment that carries the change in proportion to its traffic (half
the requests, half the rise) explains nothing. A pair of dimensions ranks in its parents' place only when it
explains nearly as much of the change as each of them (PAIR_KEEPS of its share) with less traffic: the failure
of gpt-4o in us-east is that pair, not "gpt-4o". The change is ``explained`` when the top contributor
holds EXPLAINED_SHARE of it; a change spread over everything (a global outage) is not. A change that is
not significant (a two-proportion test for rates, Welch's for means, p < ALPHA) or smaller than
MIN_RELATIVE of the baseline has no contributors: a quiet window ranks nothing.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from typing import Mapping

from scipy import stats

from monitor.foundation.filters import where_equal
from monitor.foundation.rollups import (DIMENSIONS as ROLLUP_DIMENSIONS, LATENCY_BUCKETS_MS, LATENCY_QUANTILES,
                                        OUTCOME_SPLITS, SEGMENT_DIMENSIONS, bucket_index, negative_when,
                                        quantiles_sql)
from monitor.foundation.tables import rollups

MIN_SHARE = 0.1
MIN_LIFT = 1.5
MIN_MIX_SHIFT = 0.05
PAIR_KEEPS = 0.9
EXPLAINED_SHARE = 0.5
ALPHA = 0.01
MIN_RELATIVE = 0.05
RATE_KIND = 0.75  # the rate part's share of a contribution above which it is "rate" (below 1 - this: "mix")


@dataclass(frozen=True)
class Side:
    """One window of a segment (or of the whole): the ratio's numerator and denominator, the sum of squares of
    the numerator's per-request values for a mean (None for a rate), and the value shown (a percentile's own
    value; by default num / den)."""
    num: float
    den: float
    sq: float | None = None
    shown: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.num / self.den if self.den else None

    @property
    def value(self) -> float | None:
        return self.shown if self.shown is not None else self.ratio


@dataclass
class Contributor:
    dimensions: dict[str, str]
    current: Side
    baseline: Side
    share: float
    kind: str          # rate, mix or both
    traffic_share: float  # of the current window's denominator
    baseline_traffic_share: float
    lift: float


@dataclass
class Explanation:
    current: Side
    baseline: Side
    significant: bool
    p_value: float | None
    contributors: list[Contributor] = field(default_factory=list)
    explained: bool = False
    reason: str = ""


def _p_value(cur: Side, base: Side, mean: bool) -> float | None:
    if not cur.den or not base.den:
        return None
    if mean:
        if cur.sq is None or base.sq is None or cur.den < 2 or base.den < 2:
            return None
        va = max(cur.sq / cur.den - cur.ratio ** 2, 0.0) * cur.den / (cur.den - 1)
        vb = max(base.sq / base.den - base.ratio ** 2, 0.0) * base.den / (base.den - 1)
        se = math.sqrt(va / cur.den + vb / base.den)
        if se == 0:
            return 0.0 if cur.ratio != base.ratio else 1.0
        return float(2 * stats.norm.sf(abs(cur.ratio - base.ratio) / se))
    pooled = (cur.num + base.num) / (cur.den + base.den)
    se = math.sqrt(pooled * (1 - pooled) * (1 / cur.den + 1 / base.den))
    if se == 0:
        return 1.0
    return float(2 * stats.norm.sf(abs(cur.ratio - base.ratio) / se))


def _terms(segments: Mapping[tuple, tuple[Side, Side]], total: tuple[Side, Side]) -> dict[tuple, tuple[float, float]]:
    """segment -> (rate part, mix part) of its contribution to the change."""
    cur_t, base_t = total
    reference = base_t.ratio
    out = {}
    for key, (cur, base) in segments.items():
        wc, wb = cur.den / cur_t.den, base.den / base_t.den
        rc, rb = cur.ratio, base.ratio
        if rc is None and rb is None:
            continue
        rc = rb if rc is None else rc  # a segment absent from a window: its value did not move, its share did
        rb = rc if rb is None else rb
        out[key] = ((rc - rb) * (wc + wb) / 2, (wc - wb) * ((rc + rb) / 2 - reference))
    return out


def explain(total: tuple[Side, Side], partitions: Mapping[tuple[str, ...], Mapping[tuple[str, ...], tuple[Side, Side]]],
            mean: bool = False) -> Explanation:
    """``partitions``: for each dimension (a 1-tuple) or pair (a 2-tuple of names), its segments (the value
    tuples) with their (current, baseline) sides; ``total`` the whole's. ``mean`` for a mean (cost per
    request), else a rate."""
    cur_t, base_t = total
    if not cur_t.den or not base_t.den:
        return Explanation(cur_t, base_t, False, None, reason="not enough data: a window has no requests")
    p = _p_value(cur_t, base_t, mean)
    change = cur_t.ratio - base_t.ratio
    relative = abs(change) / abs(base_t.ratio) if base_t.ratio else math.inf
    significant = p is not None and p < ALPHA and relative >= MIN_RELATIVE
    if not significant:
        return Explanation(cur_t, base_t, False, p, reason="no significant change between the windows")
    found: list[Contributor] = []
    for dims, segments in partitions.items():
        for key, (rate, mix) in _terms(segments, total).items():
            contribution = rate + mix
            share = max(0.0, min(1.0, contribution / change))
            cur, base = segments[key]
            traffic, before = cur.den / cur_t.den, base.den / base_t.den
            lift = share / traffic if traffic else math.inf
            part = abs(rate) / (abs(rate) + abs(mix)) if abs(rate) + abs(mix) else 1.0
            moved = part < 0.5 and abs(traffic - before) >= MIN_MIX_SHIFT  # traffic moved to or from it
            if share < MIN_SHARE or (lift < MIN_LIFT and not moved):
                continue
            kind = "rate" if part >= RATE_KIND else "mix" if part <= 1 - RATE_KIND else "both"
            found.append(Contributor(dict(zip(dims, key)), cur, base, share, kind, traffic, before, lift))
    ranked = _rank(found)
    top = ranked[0] if ranked else None
    explained = top is not None and top.share >= EXPLAINED_SHARE
    reason = ("" if explained else "no single dimension explains this: the change is spread over the traffic"
              if not ranked else f"the top contributor holds {top.share:.0%} of the change, less than half")
    return Explanation(cur_t, base_t, True, p, ranked, explained, reason)


def _rank(found: list[Contributor]) -> list[Contributor]:
    """Most share first, a segment holding PAIR_KEEPS of that with less traffic before it; a pair in its
    parents' place when it holds PAIR_KEEPS of the share of each parent that ranks, with less traffic, else
    left out (it says what a parent says); a segment that is another's alias (the same counts: a model and
    its only provider) left out."""
    singles = {tuple(c.dimensions.items()): c for c in found if len(c.dimensions) == 1}
    covered, pairs = set(), []
    for c in found:
        if len(c.dimensions) != 2:
            continue
        parents = [singles.get((item,)) for item in c.dimensions.items()]
        beats = [q for q in parents if q is not None and c.share >= PAIR_KEEPS * q.share
                 and c.current.den < PAIR_KEEPS * q.current.den]
        if len(beats) == sum(q is not None for q in parents):  # more precise than every parent that ranks
            pairs.append(c)
            covered.update(tuple(q.dimensions.items()) for q in beats)
    kept = [c for key, c in singles.items() if key not in covered] + pairs
    kept.sort(key=lambda c: (-c.share, len(c.dimensions), sorted(c.dimensions.items())))
    out, seen = [], set()
    while kept:
        # The most share first, unless another holds nearly as much of it with less traffic (the pairs' rule
        # between any two): the failing region before the plan most of its tenants are on, where both hold
        # all of a burst's change.
        top = kept[0]
        least = PAIR_KEEPS * top.share
        while True:
            sharper = [c for c in kept if c.share >= least and c.current.den < PAIR_KEEPS * top.current.den]
            if not sharper:
                break
            top = min(sharper, key=lambda c: c.current.den)
        kept.remove(top)
        counts = (top.current.num, top.current.den, top.baseline.num, top.baseline.den)
        if counts not in seen:
            seen.add(counts)
            out.append(top)
    return out


# -- the metrics and their rows ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RollupRows:
    """How a metric is summed from rollup rows instead: the rollup family (``requests``, whose segment
    dimensions come from the segment rollups, or ``feedback``), the aggregates of the numerator, denominator
    and value shown over rollup columns, the columns the sums read, and conditions (starting with AND) a
    rollup row needs. The sums are the raw rows' (test_explain checks it): the rollups count every request
    once. The value shown (a percentile's merged states) is read apart, for the whole and the contributors
    only: merging a state per segment of every dimension cost more than all the sums."""
    family: str
    num: str
    den: str
    columns: tuple[str, ...]
    shown: str | None = None
    where: str = ""


@dataclass(frozen=True)
class MetricRows:
    """How a metric is counted per row: the table it reads (``requests`` or ``feedback``), the SQL of a row's
    numerator, denominator and (for a mean) the numerator's square, the condition a row needs to count at
    all, and the value shown (a percentile's own SQL aggregate); ``{threshold:Float64}`` is the baseline's
    percentile where a numerator needs it, ``unhappy`` a request with negative feedback (the successful
    outcome's rule, monitor.foundation.rollups.unhappy_sql)."""
    table: str
    num: str
    den: str = "1"
    sq: str | None = None
    where: str = ""
    shown: str | None = None
    percentile_of: str | None = None  # the column whose baseline percentile is the threshold
    # The metric counts outcomes: error_type and http_status describe its failures rather than where they
    # happened (every failure has one), so they are not among its contributors.
    outcome: bool = False
    rollup: RollupRows | None = None

    @property
    def mean(self) -> bool:
        return self.sq is not None


_P95 = f"quantilesTDigestMerge({quantiles_sql(LATENCY_QUANTILES)})(latency_q)[{LATENCY_QUANTILES.index(0.95) + 1}]"
METRICS = {
    "error_rate": MetricRows("requests", "status IN ('error', 'timeout')", outcome=True, rollup=RollupRows(
        "requests", "sum(status_error) + sum(status_timeout)", "sum(requests)", ("status_error", "status_timeout", "requests"))),
    "availability": MetricRows("requests", "status = 'ok'", outcome=True, rollup=RollupRows(
        "requests", "sum(status_ok)", "sum(requests)", ("status_ok", "requests"))),
    # Explained through the share of requests slower than the latency histogram's boundary nearest the
    # baseline's p95 (latency_threshold): the rollups count the requests at or under each boundary exactly.
    "latency_p95_ms": MetricRows("requests", "latency_ms > {threshold:Float64}", shown="quantileTDigest(0.95)(latency_ms)",
                                 percentile_of="latency_ms", rollup=RollupRows(
                                     "requests", "sum(requests) - sumForEachMerge(latency_le)[{bucket:UInt32}]",
                                     "sum(requests)", ("requests", "latency_le"), shown=_P95)),
    "ttft_p95_ms": MetricRows("requests", "ifNull(ttft_ms, 0) > {threshold:Float64}", "ttft_ms IS NOT NULL",
                              shown="quantileTDigestIf(0.95)(assumeNotNull(ttft_ms), ttft_ms IS NOT NULL)",
                              percentile_of="ttft_ms"),
    "cost_per_request_usd": MetricRows("requests", "cost_usd", sq="cost_usd * cost_usd", rollup=RollupRows(
        "requests", "sum(cost_usd)", "sum(requests)", ("cost_usd", "requests"))),
    "cost_per_successful_outcome_usd": MetricRows(
        "requests", "cost_usd", "status IN {statuses:Array(String)} AND NOT unhappy", sq="cost_usd * cost_usd"),
    # Thumbs and task success take the values 1 and 0 only (validated at ingest): the rollups' good and bad
    # counts sum to the rows of the kind. Orphans (no request yet) are in no service.
    "thumbs_up_rate": MetricRows("feedback", "value = 1", where="kind = 'thumbs'", rollup=RollupRows(
        "feedback", "sum(thumbs_up)", "sum(thumbs_up) + sum(thumbs_down)", ("thumbs_up", "thumbs_down"),
        where=" AND service != ''")),
    "task_success_rate": MetricRows("feedback", "value = 1", where="kind = 'task_success'", rollup=RollupRows(
        "feedback", "sum(task_success)", "sum(task_success) + sum(task_failure)", ("task_success", "task_failure"),
        where=" AND service != ''")),
}
# The dimensions a metric is split by; a table that does not carry one is not split by it (feedback rows
# carry their request's dimensions, not its provider, error or HTTP status).
DIMENSIONS = ("service", "feature", "model", "provider", "prompt_version", "environment", "region", "language",
              "tenant", "error_type", "http_status")
FEEDBACK_LACKS = ("provider", "error_type", "http_status")
OUTCOME_DIMENSIONS = ("error_type", "http_status")
# The baseline a window is compared with by default: the same window a week before (the incident explorer's,
# the notifications').
BASELINE_SHIFT = dt.timedelta(days=7)
MAX_WINDOW = dt.timedelta(days=7)  # a window's raw rows may be read: bounded scans
PAIRS_OF = 4  # pairs are formed among the dimensions of the this many best single contributors


# -- over the store -------------------------------------------------------------------------------------------
FILTERS = ("service", "feature", "model", "provider", "prompt_version", "environment", "region", "language", "tenant")


def baseline_of(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    return start - BASELINE_SHIFT, end - BASELINE_SHIFT


class ExplainError(ValueError):
    """A metric, filter or window that cannot be explained; the message names the parameter."""


def latency_threshold(p95: float) -> float:
    """The latency histogram's boundary nearest (by ratio) ``p95``: what a latency change is explained through."""
    return min(LATENCY_BUCKETS_MS, key=lambda b: abs(math.log(b / max(p95, 1e-9))))


def _aligned(*times: dt.datetime) -> bool:
    return all(t.second == 0 and t.microsecond == 0 for t in times)


def run(store, config, metric: str, current: tuple, baseline: tuple, filters: Mapping[str, str]) -> Explanation:
    """Explain ``metric``'s change from ``baseline`` to ``current`` (each a (from, to) pair) over the traffic
    ``filters`` select (FILTERS and promoted tags): each dimension alone, then pairs of the dimensions of the
    best contributors.

    Sums come from the rollups where they hold them: windows on whole minutes, a metric with a rollup form,
    filters on rollup dimensions; each partition of rollup dimensions (or, filtered on service and feature
    at most, one segment dimension or outcome split) is read there, the others (pairs beyond the rollup
    dimensions, feedback's segments) from the windows' raw rows. So a day's explanation reads hours of
    rollups, not every request of both windows."""
    if metric not in METRICS:
        raise ExplainError(f"metric: {metric!r} cannot be explained; these can: {', '.join(METRICS)}")
    rows = METRICS[metric]
    if max(current[1] - current[0], baseline[1] - baseline[0]) > MAX_WINDOW:
        raise ExplainError(f"to: a window explained may span at most {MAX_WINDOW.days} days (it reads raw rows)")
    if current[0] < baseline[1] and baseline[0] < current[1]:
        raise ExplainError("baseline_from: the baseline window must not overlap the window explained")
    tags = tuple(config.segments.tags)
    lacks = FEEDBACK_LACKS if rows.table == "feedback" else ()
    unknown = [k for k, v in filters.items() if v and (k not in FILTERS + tags or k in lacks)]
    if unknown:
        raise ExplainError(f"{unknown[0]}: cannot filter {metric} on this; filters are "
                           f"{', '.join(k for k in FILTERS + tags if k not in lacks)}")
    where, params = where_equal({k: v for k, v in filters.items() if k in FILTERS}, FILTERS)
    for i, tag in enumerate(t for t in tags if filters.get(t)):
        where += f" AND segment_tags[{{tag{i}:String}}] = {{tag{i}_v:String}}"
        params.update({f"tag{i}": tag, f"tag{i}_v": filters[tag]})
    params["statuses"] = list(config.outcomes.success.statuses)
    filtered = {k for k, v in filters.items() if v}
    form = rows.rollup if _aligned(*current, *baseline) and filtered <= set(ROLLUP_DIMENSIONS) else None
    spans = [current, baseline]
    if rows.percentile_of:
        threshold = (rollups.rollup_shown(store, form.shown, [baseline], [{}], set(), where + form.where, params).get((1, 0))
                     if form is not None else rollups.percentile_of(store, rows, baseline, where, params))
        if threshold is None or threshold != threshold:
            return Explanation(Side(0, 0), Side(0, 0), False, None, reason="not enough data: no baseline requests")
        if rows.percentile_of == "latency_ms":
            params["threshold"] = latency_threshold(threshold)
            params["bucket"] = bucket_index(params["threshold"])
        else:
            params["threshold"] = float(threshold)
    negative = negative_when(config.outcomes.success.negative_feedback)
    # Service and feature are dimensions where the filters leave them open.
    dims = [d for d in DIMENSIONS if d not in lacks and not filters.get(d)
            and not (rows.outcome and d in OUTCOME_DIMENSIONS)] + list(tags)

    def source(part: tuple[str, ...]) -> str:
        if form is None:
            return "raw"
        if set(part) <= set(ROLLUP_DIMENSIONS):
            return form.family
        if (form.family == "requests" and len(part) == 1 and part[0] in SEGMENT_DIMENSIONS + OUTCOME_SPLITS + tags
                and filtered <= {"service", "feature"}):
            return "segments"
        return "raw"

    def read(partitions: list[tuple[str, ...]], whole: bool = True):
        total = [Side(0, 0), Side(0, 0)]
        found: dict[tuple[str, ...], dict[tuple, list[Side]]] = {p: {} for p in partitions}
        # The whole comes from the metric's rollup family (or the raw rows), read even without a partition.
        whole_from = form.family if form is not None else "raw"
        by_source: dict[str, list[tuple[str, ...]]] = {whole_from: []} if whole else {}
        for part in partitions:
            by_source.setdefault(source(part), []).append(part)
        for src, parts in by_source.items():
            if src == "raw":
                got = rollups.partition_sums(store, rows, spans, parts, tags, where, params, negative)
            else:
                # The value shown of the whole only: a contributor's is read once it is one (_shown).
                got = rollups.rollup_partition_sums(store, src, form.num, form.den, form.columns, spans, parts,
                                                    where + form.where, params)
            for r in got:
                side = Side(float(r["num"] or 0), float(r["den"] or 0), r["sq"], r["shown"])
                which = 0 if r["cur"] else 1
                if r["part"] < 0:
                    if src == whole_from:
                        total[which] = side
                else:
                    found[parts[r["part"]]].setdefault(tuple(r["vals"]), [Side(0, 0), Side(0, 0)])[which] = side
        if whole and form is not None and rows.mean:  # a mean's test needs the sum of squares, which no rollup holds
            for r in rollups.partition_sums(store, rows, spans, [], tags, where, params, negative):
                which = 0 if r["cur"] else 1
                total[which] = Side(total[which].num, total[which].den, r["sq"], total[which].shown)
        return (total[0], total[1]), {p: {k: (v[0], v[1]) for k, v in segs.items()} for p, segs in found.items()}

    def shown(e: Explanation) -> Explanation:
        """The whole and the contributors read from rollups, with their value shown (a percentile) in each
        window."""
        if form is None or not form.shown:
            return e
        todo = [c for c in e.contributors if source(tuple(c.dimensions)) != "raw"]
        values = rollups.rollup_shown(store, form.shown, spans, [{}] + [c.dimensions for c in todo],
                                      {d for c in todo for d in c.dimensions if d not in ROLLUP_DIMENSIONS},
                                      where + form.where, params)
        e.current, e.baseline = (replace(e.current, shown=values.get((1, 0))),
                                 replace(e.baseline, shown=values.get((0, 0))))
        for i, c in enumerate(todo, 1):
            c.current = replace(c.current, shown=values.get((1, i)))
            c.baseline = replace(c.baseline, shown=values.get((0, i)))
        return e

    total, partitions = read([(d,) for d in dims])
    first = explain(total, partitions, rows.mean)
    if not first.significant:
        return shown(first)
    best: list[str] = []
    for c in first.contributors:
        best += [d for d in c.dimensions if d not in best]
    pairs = [(a, b) for i, a in enumerate(best[:PAIRS_OF]) for b in best[i + 1:PAIRS_OF]]
    if not pairs:
        return shown(first)
    _, more = read(pairs, whole=False)
    return shown(explain(total, {**partitions, **more}, rows.mean))


# -- in words ---------------------------------------------------------------------------------------------
def unit(metric: str) -> str:
    return "ms" if metric.endswith("_ms") else "usd" if metric.endswith("_usd") else "pct"


def _value(v: float | None, u: str) -> str:
    if v is None:
        return "–"
    return f"{v:.1%}" if u == "pct" else f"{v:,.0f} ms" if u == "ms" else f"${v:.4g}"


def sentence(metric: str, c: Contributor) -> str:
    """'region=eu-west: 83% of the change (rate 1.1% → 24.6%)'; for a mix, how its share of the traffic moved;
    for a value new in the window (or gone from it), its share of the traffic there.
    The one wording of a contributor: the explorer, its exports and the notifications use it."""
    u = unit(metric)
    where = ", ".join(f"{k}={v}" for k, v in c.dimensions.items())
    values = f"{_value(c.baseline.value, u)} → {_value(c.current.value, u)}"
    def pct(x: float) -> str:
        return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"
    if not c.baseline.den:  # a value that took traffic only in the window (a new prompt version)
        how = f"new: {pct(c.traffic_share)} of the traffic at {_value(c.current.value, u)}"
    elif not c.current.den:
        how = f"gone: {pct(c.baseline_traffic_share)} of the traffic before at {_value(c.baseline.value, u)}"
    elif c.kind == "mix":
        how = f"traffic {pct(c.baseline_traffic_share)} → {pct(c.traffic_share)} at {values}"
    else:
        how = f"{'rate' if u == 'pct' else 'value'} {values}"
    return f"{where}: {c.share:.0%} of the change ({how})"
