"""The ``cost`` job: spend, tokens and cost per successful outcome, by feature, model and prompt_version.

A successful outcome is a request whose status is in ``outcomes.success.statuses``
and for which none of ``outcomes.success.negative_feedback`` was given. The
negative kinds are bitmaps of request-id hashes in the feedback rollups, keyed by
the time of the request, so their union counts each unhappy request once however
much feedback it got, and feedback that arrives late lands in the window of its
request. The job recomputes the windows of the last ``outcomes.feedback_delay``
on every run, so a late thumbs-down changes the figure it belongs to.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from monitor.foundation.job import Job
from monitor.foundation.metrics import COST_WINDOWS, SEGMENT_COST_METRICS, Point, labels_of
from monitor.foundation.rollups import segment_dimensions, success_status_sql, successful_outcomes, unhappy_sql
from monitor.foundation.stats import ratio
from monitor.foundation.tables import rollups

COST_SELECT = """
       sum(requests) AS requests, sum(cost_usd) AS cost, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, sum(cached_input_tokens) AS cached_input_tokens,
       sum(unpriced) AS unpriced, {success} AS success_status"""



class CostJob(Job):
    name = "cost"
    description = "cost per request, per 1k requests and per successful outcome; tokens; by model, feature, prompt_version"

    def minimum_recompute(self) -> dt.timedelta:
        # Late feedback may change any window whose requests are younger than feedback_delay.
        return self.config.outcomes.feedback_delay

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        success = self.config.outcomes.success
        statuses = list(success.statuses)
        select = COST_SELECT.format(success=success_status_sql(statuses))
        unhappy = {}
        for name, row in rollups.by_window(self.store, "feedback",
                                           f"{unhappy_sql(success.negative_feedback, rows=False)} AS unhappy", start, end,
                                     COST_WINDOWS, where="AND request_status IN {statuses:Array(String)}",
                                     params={"statuses": statuses}):
            unhappy[(name, row["w_end"], tuple(sorted(labels_of(row).items())))] = row["unhappy"]
        for name, row in rollups.by_window(self.store, "requests", select, start, end, COST_WINDOWS):
            labels = labels_of(row)
            n, cost = row["requests"], row["cost"]
            outcomes = successful_outcomes(row["success_status"],
                                           unhappy.get((name, row["w_end"], tuple(sorted(labels.items()))), 0))
            values = {
                "cost_usd": cost,
                "cost_per_request_usd": ratio(cost, n),
                "cost_per_1k_requests_usd": ratio(cost * 1000, n),
                "input_tokens": float(row["input_tokens"]),
                "output_tokens": float(row["output_tokens"]),
                "cached_input_tokens": float(row["cached_input_tokens"]),
                "unpriced_requests": float(row["unpriced"]),
                "successful_outcomes": float(outcomes),
                "cost_per_successful_outcome_usd": ratio(cost, outcomes),
            }
            for metric, v in values.items():
                if v is not None:
                    yield Point(row["w_end"], name, metric, labels, v)
        yield from self._segments(start, end)

    def _segments(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        """Each feature's spend and tokens per segment (metrics.SEGMENT_COST_METRICS): one series per
        (dimension, value), never per combination."""
        for name, row in rollups.by_segment_window(
                self.store, "sum(requests) AS requests, sum(cost_usd) AS cost, sum(input_tokens) AS input_tokens, "
                "sum(output_tokens) AS output_tokens", start, end, COST_WINDOWS, segment_dimensions(self.config)):
            labels = {"service": row["service"], "feature": row["feature"], row["dimension"]: row["value"]}
            values = {"cost_usd": row["cost"], "cost_per_request_usd": ratio(row["cost"], row["requests"]),
                      "input_tokens": float(row["input_tokens"]), "output_tokens": float(row["output_tokens"])}
            for metric in SEGMENT_COST_METRICS:
                if values[metric] is not None:
                    yield Point(row["w_end"], name, metric, labels, values[metric])
