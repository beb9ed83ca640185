"""The ``slo`` job: error budget remaining and burn rates for each SLO in config.

Per the Google SRE workbook: with objective O (e.g. 99.5%) the error budget is
1 - O; the burn rate over a window is (bad / total) / (1 - O), so 1 spends the
budget exactly over the SLO period; the budget remaining over the period is
1 - bad / (total * (1 - O)). Counts come from the per-minute rollups and the
arithmetic is exact (Fractions over integer counts and the objective's decimal
value) until the value is written.

Good events: ``availability`` -> status ok; ``latency`` -> latency_ms <= threshold
(a histogram boundary, counted exactly at insert time).
"""
from __future__ import annotations

import bisect
import datetime as dt
from fractions import Fraction
from typing import Iterable

from monitor.config import SloConfig
from monitor.rollups import bucket_index

from .base import UTC, Job, Point, window_name

BURN_WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400, "3d": 259200}


def error_budget(slo: SloConfig) -> Fraction:
    return (100 - Fraction(slo.objective)) / 100


def _good_expr(slo: SloConfig) -> str:
    if slo.sli == "availability":
        return "sum(status_ok)"
    return f"sumForEachMerge(latency_le)[{bucket_index(slo.threshold_ms)}]"


def slo_labels(slo: SloConfig) -> dict[str, str]:
    labels = {"slo": slo.name, "service": slo.service, "sli": slo.sli}
    if slo.feature:
        labels["feature"] = slo.feature
    return labels


class SloJob(Job):
    name = "slo"
    description = "SLO error budget remaining and multi-window burn rates"

    def per_minute(self, slo: SloConfig, lo: dt.datetime, hi: dt.datetime) -> tuple[list[int], list[int], list[int]]:
        """Minute starts (epoch seconds) with their good and total counts, for [lo, hi)."""
        where = "service = {service:String}" + (" AND feature = {feature:String}" if slo.feature else "")
        rows = self.store.query(
            f"SELECT toUnixTimestamp(minute) AS m, {_good_expr(slo)} AS good, sum(requests) AS total "
            f"FROM requests_1m WHERE {where} AND minute >= toDateTime({{lo:UInt32}}, 'UTC') "
            f"AND minute < toDateTime({{hi:UInt32}}, 'UTC') GROUP BY m ORDER BY m",
            {"service": slo.service, "feature": slo.feature or "", "lo": int(lo.timestamp()),
             "hi": int(hi.timestamp())})
        return [r[0] for r in rows], [int(r[1]) for r in rows], [int(r[2]) for r in rows]

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        for slo in self.config.slos:
            yield from self._compute_slo(slo, start, end)

    def _compute_slo(self, slo: SloConfig, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        period = int(slo.period.total_seconds())
        longest = max(period, max(BURN_WINDOWS.values()))
        minutes, good, total = self.per_minute(slo, start - dt.timedelta(seconds=longest), end)
        # Prefix sums make every trailing window at every evaluation minute O(log n).
        cg, ct = [0], [0]
        for g, t in zip(good, total):
            cg.append(cg[-1] + g)
            ct.append(ct[-1] + t)
        budget = error_budget(slo)
        labels = slo_labels(slo)
        windows = dict(BURN_WINDOWS)
        windows[window_name(period)] = period
        t = int(start.timestamp()) + 60
        while t <= int(end.timestamp()):
            at = dt.datetime.fromtimestamp(t, tz=UTC)
            for name, seconds in windows.items():
                i, j = bisect.bisect_left(minutes, t - seconds), bisect.bisect_left(minutes, t)
                g, n = cg[j] - cg[i], ct[j] - ct[i]
                if n == 0:
                    continue
                bad_ratio = Fraction(n - g, n)
                yield Point(at, name, "slo_sli", labels, float(Fraction(g, n)))
                yield Point(at, name, "slo_burn_rate", labels, float(bad_ratio / budget))
                if seconds == period:
                    yield Point(at, name, "slo_error_budget_remaining", labels, float(1 - bad_ratio / budget))
            t += 60
