"""The ``slo`` job: error budget remaining and burn rates for each SLO in config.

Per the Google SRE workbook: with objective O (e.g. 99.5%) the error budget is
1 - O; the burn rate over a window is (bad / total) / (1 - O), so 1 spends the
budget exactly over the SLO period; the budget remaining over the period is
1 - bad / (total * (1 - O)). Counts come from the per-minute rollups and the
arithmetic is exact (Fractions over integer counts and the objective's decimal
value) until the value is written.

Good events: ``availability`` -> status ok; ``latency`` -> latency_ms <= threshold
(a histogram boundary, counted exactly at insert time). Every window is summed
exactly: whole hours from the hourly rollup, the ragged ends from the minute one.
"""
from __future__ import annotations

import bisect
import datetime as dt
from fractions import Fraction
from typing import Iterable

from monitor.foundation.job import Job
from monitor.foundation.config import SloConfig
from monitor.foundation.metrics import (BURN_WINDOWS, SEGMENT_WINDOWS, UTC, Point, error_budget, slo_labels,
                                        window_name)
from monitor.foundation.rollups import segment_dimensions, slo_good_sql
from monitor.foundation.tables import rollups


class _Counts:
    """Good and total counts per bucket (epoch seconds), with prefix sums for any range of buckets."""

    def __init__(self, rows):
        self.keys, self.good, self.total = [0] * len(rows), [0], [0]
        for i, (k, g, t) in enumerate(rows):
            self.keys[i] = k
            self.good.append(self.good[-1] + int(g))
            self.total.append(self.total[-1] + int(t))

    def between(self, a: int, b: int) -> tuple[int, int]:
        i, j = bisect.bisect_left(self.keys, a), bisect.bisect_left(self.keys, b)
        return self.good[j] - self.good[i], self.total[j] - self.total[i]


class SloJob(Job):
    name = "slo"
    description = "SLO error budget remaining and multi-window burn rates"
    # Seconds between computed points. The demo's history uses five minutes: every minute of two
    # weeks is a million points that no chart of that span draws.
    step = 60

    def counts(self, slo: SloConfig, table: str, lo: int, hi: int) -> _Counts:
        return _Counts(rollups.good_and_total(self.store, table, slo_good_sql(slo), slo.service, slo.feature, lo, hi))

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        for slo in self.config.slos:
            yield from self._compute_slo(slo, start, end)
            yield from self._segments(slo, start, end)

    def _segments(self, slo: SloConfig, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        """The SLO's SLI and burn rate per segment of its traffic (language, region, tenant, promoted tags), per
        hour and day (metrics.SEGMENT_WINDOWS, whole windows, not the trailing ones of the SLO itself): which
        language spends the budget. A service's SLO sums its features' counts of a segment."""
        sums: dict[tuple, list[int]] = {}
        for name, row in rollups.by_segment_window(
                self.store, f"{slo_good_sql(slo)} AS good, sum(requests) AS total", start, end, SEGMENT_WINDOWS,
                segment_dimensions(self.config), {"service": slo.service, "feature": slo.feature}):
            acc = sums.setdefault((name, row["w_end"], row["dimension"], row["value"]), [0, 0])
            acc[0] += int(row["good"])
            acc[1] += int(row["total"])
        budget, labels = error_budget(slo), slo_labels(slo)
        for (name, w_end, dimension, value), (good, total) in sorted(sums.items()):
            if total:
                at, seg = w_end.replace(tzinfo=UTC), {**labels, dimension: value}
                yield Point(at, name, "slo_sli", seg, float(Fraction(good, total)))
                yield Point(at, name, "slo_burn_rate", seg, float(Fraction(total - good, total) / budget))

    def _compute_slo(self, slo: SloConfig, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        period = int(slo.period.total_seconds())
        s, e, hour = int(start.timestamp()), int(end.timestamp()), 3600
        longest_burn = max(BURN_WINDOWS.values())
        # Minutes where windows begin or end inside an hour; whole hours in between come from the
        # hourly rollup, so a 30-day period reads ~720 hourly rows instead of ~43,200 minute rows.
        minutes = _Merged(self.counts(slo, "requests_1m", s - longest_burn - hour, e),
                          self.counts(slo, "requests_1m", s - period - hour, e - period + 2 * hour))
        hours = self.counts(slo, "requests_1h", s - period - hour, e)

        def window(a: int, b: int) -> tuple[int, int]:
            first, last = -(-a // hour) * hour, b - b % hour
            if first >= last:
                return minutes.between(a, b)
            parts = (minutes.between(a, first), hours.between(first, last), minutes.between(last, b))
            return sum(p[0] for p in parts), sum(p[1] for p in parts)

        budget = error_budget(slo)
        labels = slo_labels(slo)
        windows = dict(BURN_WINDOWS)
        windows[window_name(period)] = period
        for t in range(s - s % self.step + self.step, e + 1, self.step):
            at = dt.datetime.fromtimestamp(t, tz=UTC)
            for name, seconds in windows.items():
                g, n = window(t - seconds, t) if seconds > hour else minutes.between(t - seconds, t)
                if n == 0:
                    continue
                bad_ratio = Fraction(n - g, n)
                yield Point(at, name, "slo_sli", labels, float(Fraction(g, n)))
                yield Point(at, name, "slo_burn_rate", labels, float(bad_ratio / budget))
                if seconds == period:
                    yield Point(at, name, "slo_error_budget_remaining", labels, float(1 - bad_ratio / budget))


class _Merged:
    """Two possibly overlapping minute ranges read separately, answered as one."""

    def __init__(self, a: _Counts, b: _Counts):
        rows = {}
        for c in (a, b):
            for i, k in enumerate(c.keys):
                rows[k] = (c.good[i + 1] - c.good[i], c.total[i + 1] - c.total[i])
        self._counts = _Counts([(k, g, t) for k, (g, t) in sorted(rows.items())])

    def between(self, a: int, b: int) -> tuple[int, int]:
        return self._counts.between(a, b)
