"""The ``sli`` job: service-level indicators per window and dimension set, from the per-minute rollups.

Each window (1m, 5m, 1h, 1d) is written at several levels of detail at once
(GROUPING SETS): per service, per service and feature, and per feature broken
down by model and by prompt_version, plus the total. A series' labels say
which level it is.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Iterable

from monitor.foundation.job import Job
from monitor.foundation.metrics import (METRICS, SEGMENT_METRICS, SEGMENT_WINDOWS, SLI_WINDOWS, WINDOWS, Point,
                                        labels_of, window_ends)
from monitor.foundation.rollups import (DIMENSIONS, FEEDBACK_SELECT, REQUEST_SELECT, feedback_metrics,
                                        request_metrics, rollup_for, segment_dimensions)
from monitor.foundation.tables import rollups


def points(name: str, row: dict, values: dict[str, float | None], labels: dict | None = None) -> Iterable[Point]:
    labels = labels_of(row) if labels is None else labels
    for metric, v in values.items():
        # No value is written where there is no denominator: "no data" is not 0%.
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            yield Point(row["w_end"], name, metric, labels, v)


class SliJob(Job):
    name = "sli"
    description = "request counts, error rate, availability, latency/TTFT percentiles, quality rates, feedback rates"
    # Which of SLI_WINDOWS a run writes. The demo's history narrows it: minute windows of two weeks
    # are most of the work and only periods of a day and a half or less chart them.
    windows = SLI_WINDOWS

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        for name, row in rollups.by_window(self.store, "requests", REQUEST_SELECT, start, end, self.windows):
            yield from points(name, row, request_metrics(row))
        yield from self._overflow(start, end)
        yield from self._segments(start, end)
        for name, row in rollups.by_window(self.store, "feedback", FEEDBACK_SELECT, start, end, self.windows,
                                     where="AND service != ''"):
            yield from points(name, row, feedback_metrics(row))

    def _segments(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        """Each feature's request figures per segment: one series per (dimension, value), never per combination."""
        windows = {w: s for w, s in SEGMENT_WINDOWS.items() if w in self.windows}
        for name, row in rollups.by_segment_window(self.store, REQUEST_SELECT, start, end, windows,
                                                   segment_dimensions(self.config)):
            labels = {"service": row["service"], "feature": row["feature"], row["dimension"]: row["value"]}
            values = request_metrics(row)
            yield from points(name, row, {m: values[m] for m in SEGMENT_METRICS}, labels)

    def _overflow(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        """Requests the cardinality budget counted under the overflow value, per service and dimension."""
        ov = self.config.cardinality.overflow_value
        for name in [w for w in METRICS["cardinality_overflow_requests"][1] if w in self.windows]:
            seconds = WINDOWS[name]
            span = window_ends(start, end, seconds)
            if span is None:
                continue
            first, last = span
            for row in rollups.overflow_counts(self.store, rollup_for(seconds), seconds,
                                               first - dt.timedelta(seconds=seconds), last, DIMENSIONS, ov):
                for dim in DIMENSIONS:
                    if row[f"ov_{dim}"]:
                        yield Point(row["w_end"], name, "cardinality_overflow_requests",
                                    {"service": row["svc"], "dimension": dim}, float(row[f"ov_{dim}"]))
