"""``releases``: every prompt, model (or other ``releases.dimensions``) change of a feature, found in the traffic
or declared, judged with statistics as its data arrives, and the release KPIs.

Each run scans the hourly rollup over the judging horizon (``releases.judge_for`` plus the days a before/after
baseline reaches back) for values that started taking traffic (jobs/release_detect.py), merges them with the
releases already stored (a declared release takes the detected start of its value), and judges every
release whose judging has not ended:

* ``canary`` while both values take traffic in the same hours: each side is its value's requests in those
  hours, so the time of day cancels out; judged until full rollout;
* ``before_after`` when the new value replaced the old at once: the candidate is the new value's requests
  from the start for ``judge_for``; the baseline the previous value's requests in the same hours of each of
  the 7 days before the start (same time of day, every weekday once), so a daily pattern is not a regression.

The verdict is jobs/release_verdict.py's. A release whose new value was the live value before the previous
release of its feature and dimension is a rollback of it. Points: ``release_regression`` (1 while a failed
release is live, for the ReleaseRegression ticket) and per service, over the trailing 30 days at each UTC
day's end, ``releases_per_week``, ``release_rollback_rate`` and ``release_verdict_rate``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Iterable

from jobs import release_detect, release_verdict as rv
from monitor.foundation.job import Job
from monitor.foundation.metrics import Point, window_ends
from monitor.foundation.rollups import negative_when
from monitor.foundation.tables import releases
from monitor.foundation.tables.rollups import dimension_sql

log = logging.getLogger(__name__)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
BASELINE_DAYS = 7          # a before/after baseline: the same hours of each of the 7 days before
WARMUP = dt.timedelta(days=2)  # hours scanned before the horizon so values live then are not new
SAMPLE = 4000              # per-request values sampled per side for the bootstrap
TEXTS = 100                # output texts per side for the drift between the two values
KPI_WINDOW = dt.timedelta(days=30)
JUDGED = ("pass", "marginal", "fail")


class ReleasesJob(Job):
    name = "releases"
    description = "prompt and model releases: found, judged (canary or before/after) and their KPIs"

    def __init__(self, store, config, clock, interval, embedder=None):
        super().__init__(store, config, clock, interval)
        self._embedder = embedder

    def catchup_limit(self) -> dt.timedelta:
        return self.config.releases.judge_for + dt.timedelta(days=BASELINE_DAYS)

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        cfg = self.config.releases
        if not cfg.enabled:
            return
        horizon = min(start, end - cfg.judge_for - DAY)
        scan_from = (horizon - WARMUP).replace(minute=0, second=0, microsecond=0)
        stored = {r.release_id: r for r in releases.search(self.store, lo=scan_from - DAY * BASELINE_DAYS)}
        judged: list[releases.Release] = []
        for dimension in cfg.dimensions:
            per_feature = releases.hourly_values(self.store, dimension, scan_from - DAY * BASELINE_DAYS, end)
            for (service, feature), hours in per_feature.items():
                history = [r for r in stored.values() if (r.service, r.feature, r.dimension) == (service, feature, dimension)]
                found = release_detect.find(hours, scan_from + WARMUP)
                rows = self._merge(service, feature, dimension, found, history)
                for row, f in rows:
                    if row.judged_to is not None and row.judged_to < start - HOUR and row.verdict != "pending":
                        continue  # its judging ended before this run's range: as stored
                    judged.append(self._judge(row, f, hours, end))
        judged = _link_rollbacks(judged, list(stored.values()))
        releases.write(self.store, judged, self.clock.now())
        for r in judged:
            if r.verdict in JUDGED:
                live = r.ended is None or r.ended > end
                yield Point(end, "1h", "release_regression",
                            {"service": r.service, "feature": r.feature, "dimension": r.dimension,
                             "candidate": r.value, "release": r.release_id},
                            1.0 if r.verdict == "fail" and live else 0.0)
        yield from self._kpis(start, end)

    # -- finding ---------------------------------------------------------------------------------------------
    def _merge(self, service, feature, dimension, found: list[release_detect.Found],
               history: list[releases.Release]) -> list[tuple[releases.Release, release_detect.Found]]:
        out = []
        dim_sql = dimension_sql(dimension, tuple(self.config.segments.tags))
        for f in found:
            declared = next((r for r in history if r.source == "declared" and r.value == f.value
                             and abs(r.ts - f.start) <= releases.DECLARED_MATCH), None)
            rid = releases.release_id(service, feature, dimension, f.value, f.start)
            base = declared or next((r for r in history if r.release_id == rid), None)
            if base is None:
                first = releases.first_request(self.store, service, feature, dim_sql, f.value, f.start)
                base = releases.Release(rid, service, feature, dimension, f.value, f.previous_value,
                                        first or f.start)
            out.append((base.with_(previous_value=base.previous_value or f.previous_value, mode=f.mode,
                                   full_rollout=f.full_rollout, ended=f.ended), f))
        return out

    # -- judging ---------------------------------------------------------------------------------------------
    def _judge(self, r: releases.Release, f: release_detect.Found, hours: dict, end: dt.datetime) -> releases.Release:
        cfg = self.config.releases
        if r.mode == "canary":
            until = min(x for x in (r.full_rollout, r.ended, end) if x is not None)
            cand_hours = [h for h in f.both_hours if h < until]
            base_hours = cand_hours
        else:
            until = min(x for x in (r.ts + cfg.judge_for, r.ended, end) if x is not None)
            start_hour = r.ts.replace(minute=0, second=0, microsecond=0)
            cand_hours = sorted(h for h, values in hours.items()
                                if start_hour <= h < until and values.get(r.value))
            base_hours = sorted({h - k * DAY for h in cand_hours for k in range(1, BASELINE_DAYS + 1)
                                 if h - k * DAY < start_hour})
        dim_sql = dimension_sql(r.dimension, tuple(self.config.segments.tags))
        args = dict(cap=SAMPLE, statuses=list(self.config.outcomes.success.statuses),
                    negative=negative_when(self.config.outcomes.success.negative_feedback), texts=TEXTS)
        base = releases.side(self.store, r.service, r.feature, dim_sql, r.previous_value, base_hours, **args)
        cand = releases.side(self.store, r.service, r.feature, dim_sql, r.value, cand_hours, **args)
        verdict = self._verdict(r, base, cand)
        window_end = (r.full_rollout if r.mode == "canary" else r.ts + cfg.judge_for)
        return r.with_(verdict=verdict.verdict, reason=verdict.reason,
                       metrics={k: j.as_dict() for k, j in verdict.metrics.items()},
                       judged_from=min(cand_hours) if cand_hours else None,
                       judged_to=window_end if window_end is not None and window_end <= end else None)

    def _verdict(self, r: releases.Release, base: releases.Side, cand: releases.Side) -> rv.Verdict:
        cfg = self.config.releases
        seed = int(hashlib.sha256(r.release_id.encode()).hexdigest()[:8], 16)
        n = cfg.min_requests
        judged = [
            rv.rate("error_rate", base.errors, base.requests, cand.errors, cand.requests, n),
            *rv.bootstrap_all({m: rv.percentile(q) for m, q in rv.PERCENTILES.items()}, base.latency, cand.latency,
                              n, seed, base.requests, cand.requests),
            rv.bootstrap("ttft_p95_ms", base.ttft, cand.ttft, rv.percentile(95), n, seed, base.ttft_n, cand.ttft_n),
            rv.rate("thumbs_up_rate", base.thumbs_up, base.thumbs, cand.thumbs_up, cand.thumbs, rv.MIN_FEEDBACK),
            rv.rate("task_success_rate", base.tasks_ok, base.tasks, cand.tasks_ok, cand.tasks, rv.MIN_FEEDBACK),
            rv.rate("hallucination_rate", base.hallucinated, base.reviews, cand.hallucinated, cand.reviews,
                    rv.MIN_FEEDBACK),
            rv.bootstrap("cost_per_request_usd", base.cost, cand.cost, rv.mean, n, seed, base.requests, cand.requests),
            rv.bootstrap("cost_per_successful_outcome_usd", base.cost, cand.cost, None, n, seed, base.requests,
                         cand.requests, weights=(base.success, cand.success)),
            rv.bootstrap("output_tokens", base.output_tokens, cand.output_tokens, rv.mean, n, seed, base.ok, cand.ok),
            self._drift(base.outputs, cand.outputs),
        ]
        return rv.decide(judged, cfg, base.requests, cand.requests)

    def _drift(self, base_texts: list[str], cand_texts: list[str]) -> rv.Judged:
        judged = rv.Judged("output_drift", None, None, len(base_texts), len(cand_texts),
                           "embedding drift: domain classifier, MMD and centroid distance by vote")
        if not self.config.drift.enabled or min(len(base_texts), len(cand_texts)) < rv.MIN_FEEDBACK:
            judged.reason = "too few output texts" if self.config.drift.enabled else "drift is disabled"
            return judged
        try:
            from jobs.drift_methods import compare
            from jobs.embeddings import Embedder
            embedder = self._embedder or Embedder(self.store, self.config, self.clock)
            self._embedder = embedder
            result = compare(embedder.embed(base_texts), embedder.embed(cand_texts))
        except Exception as exc:  # the texts' drift is one metric: its failure is said, the verdict stands
            log.warning("releases: output drift not computed: %s", exc)
            judged.reason = f"not computed: {type(exc).__name__}"
            return judged
        if not result.decided:
            judged.reason = result.undecided_reason or "undecided"
            return judged
        judged.baseline, judged.candidate = 0.0, result.score
        judged.change = result.score
        judged.verdict = "worse" if result.detected else "same"
        judged.reason = ("the two values' output texts differ (a change in what users read)" if result.detected
                         else "the output texts are alike")
        return judged

    # -- KPIs ----------------------------------------------------------------------------------------------
    def _kpis(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        span = window_ends(start, end, int(DAY.total_seconds()))
        if span is None:
            return
        t, last = span
        while t <= last:
            per_service: dict[str, list[releases.Release]] = {}
            for r in releases.search(self.store, lo=t - KPI_WINDOW, hi=t):
                per_service.setdefault(r.service, []).append(r)
            for service, rows in per_service.items():
                n = len(rows)
                labels = {"service": service}
                yield Point(t, "30d", "releases_per_week", labels, n * 7 / 30)
                yield Point(t, "30d", "release_rollback_rate", labels, sum(bool(r.rollback_of) for r in rows) / n)
                yield Point(t, "30d", "release_verdict_rate", labels,
                            sum(r.verdict in JUDGED for r in rows) / n)
            t += DAY



def _link_rollbacks(judged: list[releases.Release], stored: list[releases.Release]) -> list[releases.Release]:
    """A release back to the value the previous release of its feature and dimension replaced is a rollback
    of that release."""
    every = {r.release_id: r for r in stored}
    every.update({r.release_id: r for r in judged})
    by_key: dict[tuple, list[releases.Release]] = {}
    for r in every.values():
        by_key.setdefault((r.service, r.feature, r.dimension), []).append(r)
    out = []
    for r in judged:
        earlier = [p for p in by_key[(r.service, r.feature, r.dimension)] if p.ts < r.ts and p.mode]
        prev = max(earlier, key=lambda p: p.ts, default=None)
        rollback_of = prev.release_id if prev and prev.previous_value == r.value and prev.value == r.previous_value else ""
        out.append(r.with_(rollback_of=rollback_of))
    return out
