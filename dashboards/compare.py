"""Honest comparisons: when a change against a previous period is shown, and what a cell says instead.

One rule, used by the overview's cells (the hallucination rate's included), the
incident explorer's "week before" columns and its exports, so a number never
appears on one and a reason on another. A change is shown only when the previous
period ("baseline") has enough data:

1. it has requests at all; otherwise the row is ``new`` there;
2. it is covered by data: the first hour with requests for the row (service and
   feature, or all traffic matching the filters for the total row) starts at or
   before the previous period's start, so at most its first hour can be missing
   (the hour rollup's bucket is the tolerance); otherwise ``partial previous period``;
3. for rates, percentiles and per-unit costs, the figure's denominator reaches a
   minimum in BOTH periods (MINIMUMS); otherwise ``too few <what> (<n> before|now)``.

Counts and amounts (requests, cost) need only 1 and 2. docs/metrics.md and the
overview's help text say the same; keep the three in step.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# The minimum denominator, in each of the two periods, for a change of a rate or percentile.
MIN_REQUESTS = 30
MIN_FEEDBACK = 30
MIN_REVIEWS = 20
# The first data is known to the hour (the hour rollup): that much of a previous period may be missing.
COVERAGE_TOLERANCE = dt.timedelta(hours=1)

# figure -> (the period figure counting its denominator, minimum, what it counts). Figures not
# listed (requests, cost) are counts or amounts: no denominator.
DENOMINATORS = {
    "error_rate": ("requests", MIN_REQUESTS, "requests"),
    "availability": ("requests", MIN_REQUESTS, "requests"),
    "latency_p95_ms": ("requests", MIN_REQUESTS, "requests"),
    "latency_p99_ms": ("requests", MIN_REQUESTS, "requests"),
    "ttft_p95_ms": ("ttft_requests", MIN_REQUESTS, "streamed requests"),
    "cost_per_request_usd": ("requests", MIN_REQUESTS, "requests"),
    "cost_per_successful_outcome_usd": ("successful_outcomes", MIN_REQUESTS, "successes"),
    "thumbs_up_rate": ("thumbs", MIN_FEEDBACK, "thumbs"),
    "task_success_rate": ("task_labels", MIN_FEEDBACK, "task labels"),
    "hallucination_rate": ("hallucination_reviews", MIN_REVIEWS, "reviews"),
}

NEW = "new"
PARTIAL = "partial previous period"
NONE_BEFORE = "none before"


@dataclass(frozen=True)
class Change:
    """What a cell shows beside a value: ``text`` (a number such as ``+3.2%`` or a reason),
    ``tone`` good/bad/"" and ``reason`` ("" when ``text`` is a number), plus a longer ``title``."""
    text: str
    tone: str = ""
    reason: str = ""
    title: str = ""

    @property
    def shown(self) -> bool:
        return not self.reason


def covered(first_seen: dt.datetime | None, previous_start: dt.datetime) -> bool:
    """Whether data reaches back over the previous period: its first hour starts at or before the
    period's start (so at most COVERAGE_TOLERANCE of the period can lack data)."""
    return first_seen is not None and first_seen <= previous_start


def enough(key: str, figures: dict) -> tuple[bool, int]:
    """(whether ``figures`` hold enough of ``key``'s denominator, that denominator)."""
    if key not in DENOMINATORS:
        return True, 0
    name, minimum, _ = DENOMINATORS[key]
    n = int(figures.get(name) or 0)
    return n >= minimum, n


def number(cur: float, base: float, unit: str) -> str:
    """The change itself: percentage points for rates, per cent for the rest."""
    if unit == "pct":
        return f"{(cur - base) * 100:+.2f} pp"
    if not base:
        return "from 0" if cur else "±0%"
    return f"{(cur - base) / base * 100:+.1f}%"


def compare(key: str, unit: str, cur: dict, prev: dict, first_seen: dt.datetime | None,
            previous_start: dt.datetime, better: bool | None = None) -> Change:
    """The change of figure ``key`` from the previous period's figures ``prev`` to ``cur`` (dicts of
    period figures with their denominators), or why there is none. ``first_seen`` is the start of the
    row's first hour with data, ``previous_start`` the previous period's start."""
    value, base = cur.get(key), prev.get(key)
    if value is None:
        return Change("–", reason="no value", title="no value in this period")
    if not prev.get("requests"):
        return Change(NEW, reason="new", title="no requests in the previous period")
    if not covered(first_seen, previous_start):
        return Change(PARTIAL, reason="partial", title=(
            "data starts after the previous period's start"
            + (f" (first hour with data {first_seen:%Y-%m-%d %H:%M} UTC)" if first_seen else "")))
    if key in DENOMINATORS:
        _, minimum, what = DENOMINATORS[key]
        for figures, when in ((prev, "before"), (cur, "now")):
            ok, n = enough(key, figures)
            if not ok:
                return Change(f"too few {what} ({n} {when})", reason="too few",
                              title=f"a change needs at least {minimum} {what} in each period")
    if base is None:
        return Change(NONE_BEFORE, reason="none before", title="no value in the previous period")
    tone = ""
    if better is not None and value != base:
        tone = "good" if (value > base) == better else "bad"
    return Change(number(value, base, unit), tone)


def row_change(row, key: str, unit: str, better: bool | None = None) -> Change:
    """compare() for a kpis.Row (its current and previous figures, first data and baseline start)."""
    return compare(key, unit, row.current, row.previous, row.first_seen, row.baseline_start, better)


def incidents_change(row) -> Change:
    """The previous period's incident count, under the rule's first two conditions (a count needs no minimum)."""
    if not row.previous.get("requests"):
        return Change(NEW, reason="new", title="no requests in the previous period")
    if not covered(row.first_seen, row.baseline_start):
        return Change(PARTIAL, reason="partial", title="data starts after the previous period's start")
    return Change(f"prev {len(row.previous_incidents)}")
