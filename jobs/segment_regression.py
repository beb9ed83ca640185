"""``segment_regression``: hidden regressions per UTC day (monitor.foundation.hidden_regressions).

For each day that ends, every segment with enough requests that day and in the 7 days before it is
judged: ``segment_regression`` is 1 when its error rate rose significantly while its feature's did not,
0 when it was judged and did not, absent when too thin to judge. Labels: service, feature, dimension
(language, region, tenant or a promoted tag) and segment (its value). The SegmentRegression ticket reads it.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from monitor.foundation import hidden_regressions
from monitor.foundation.job import Job
from monitor.foundation.metrics import Point, window_ends

DAY = dt.timedelta(days=1)
BASELINE = dt.timedelta(days=7)


class SegmentRegressionJob(Job):
    name = "segment_regression"
    description = "segments whose error rate rose while their feature's did not (hidden regressions), per day"

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        span = window_ends(start, end, int(DAY.total_seconds()))
        if span is None:
            return
        t, last = span
        while t <= last:
            verdict = hidden_regressions.find(self.store, self.config, (t - DAY, t), (t - DAY - BASELINE, t - DAY))
            flagged = {(r.service, r.feature, r.dimension, r.value) for r in verdict.regressions}
            for key in verdict.tested:
                service, feature, dimension, value = key
                yield Point(t, "1d", "segment_regression",
                            {"service": service, "feature": feature, "dimension": dimension, "segment": value},
                            1.0 if key in flagged else 0.0)
            t += DAY
