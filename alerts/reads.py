"""What one evaluation reads for each rule: the series it sees, their value and whether its condition holds.

Request and feedback SLIs are computed live from the rollups, over a window that
slides with the evaluation: the last ``window`` of whole minutes and the running
minute (the rollups count a request the moment it is inserted; they hold minutes,
so a window covers at least its length and at most a minute more). So a rule over
5 minutes sees what came in seconds ago, a late row counts when it arrives, and
nothing counts twice (ingest drops replays, the reconciliation keeps the rollups
equal to the raw rows). SLO burn rates are live too, over their long and short
windows. Every other metric (cost, drift, hallucination, the budget's overflow)
is read from metric_points, as the jobs write it. The system rules look at
traffic, job runs, rejected rows and the outbox.

Rules that read the same thing share one query per evaluation.
"""
from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import operator
from fractions import Fraction
from typing import Callable

from alerts.rules import BURN_RATE_ALERTS, LIVE_LABELS, BurnRateRule, SystemRule, is_live
from monitor.foundation.clock import to_millis
from monitor.foundation.config import parse_duration
from monitor.foundation.metrics import LIVE_FEEDBACK_METRICS, METRICS, WINDOWS, error_budget, floor_to
from monitor.foundation.rollups import feedback_metrics, request_metrics
from monitor.foundation.tables import job_runs, metric_points, notification_outbox, rejected, rollups

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
       "!=": operator.ne}
MINUTE = dt.timedelta(minutes=1)
REJECT_WINDOW = dt.timedelta(minutes=15)


def fingerprint(labels: dict[str, str]) -> str:
    text = "\x00".join(f"{k}\x01{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def live_window(now: dt.datetime, length: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    """[lo, hi) of a live window: ``length`` of whole minutes before the running minute, and the running minute."""
    minute = floor_to(now, 60)
    return minute - length, minute + MINUTE


class StoredPoints:
    """metric_points as the rules read it: a query per read (each evaluation shares it between its rules)."""

    def __init__(self, store):
        self.store = store

    def with_keys(self, metric: str, window: str, lo: dt.datetime, hi: dt.datetime, keys: list[str]) -> list:
        return metric_points.points_with_keys(self.store, metric, window, lo, hi, keys)

    def newest(self, metric: str, window: str, lo: dt.datetime, hi: dt.datetime) -> list:
        return metric_points.newest_per_series(self.store, metric, window, lo, hi)


class ReplayPoints(StoredPoints):
    """For a replay's stretch of evaluation times (AlertEngine.replay): each (metric, window) read once, over
    the stretch and as far back as a rule looks, and cut per evaluation. The points are history the jobs
    wrote before the replay, so the cut is what a query at that evaluation would have returned; a replay
    evaluating a stretch of hours every few minutes then costs one query per metric, not one per time."""

    def __init__(self, store, last: dt.datetime):
        super().__init__(store)
        self.last = last
        self._read: dict[tuple[str, str], tuple[dt.datetime, list, list]] = {}

    def _points(self, metric: str, window: str, lo: dt.datetime, hi: dt.datetime) -> list:
        lo, hi = to_millis(lo), to_millis(hi)  # as the query compares them with the stored times
        held = self._read.get((metric, window))
        if held is None or lo < held[0] or hi > self.last:
            if hi > self.last:  # past the stretch: not this reader's
                return metric_points.points_between(self.store, metric, window, lo, hi)
            rows = metric_points.points_between(self.store, metric, window, lo, self.last)
            held = (lo, [r.ts for r in rows], rows)
            self._read[(metric, window)] = held
        _, times, rows = held
        return rows[bisect.bisect_right(times, lo):bisect.bisect_right(times, hi)]

    def with_keys(self, metric, window, lo, hi, keys):
        return [r for r in self._points(metric, window, lo, hi) if sorted(r.labels) == keys]

    def newest(self, metric, window, lo, hi):
        newest: dict[tuple, metric_points.SeriesValue] = {}
        for r in self._points(metric, window, lo, hi):  # oldest first: the last one seen is the newest
            newest[tuple(sorted(r.labels.items()))] = metric_points.SeriesValue(r.labels, r.value)
        return list(newest.values())


class Reads:
    """One evaluation's reads; ``samples(rule)`` gives fingerprint -> (labels, value, condition holds)."""

    def __init__(self, store, config, now: dt.datetime, job_intervals: dict[str, dt.timedelta] | None = None,
                 points: StoredPoints | None = None):
        self.store = store
        self.config = config
        self.now = now
        self.job_intervals = job_intervals or {}
        self.points = points or StoredPoints(store)
        self._cache: dict[tuple, object] = {}

    def once(self, key: tuple, read, *args):
        if key not in self._cache:
            self._cache[key] = read(*args)
        return self._cache[key]

    def samples(self, rule) -> dict[str, tuple[dict, float | None, bool]]:
        if isinstance(rule, BurnRateRule):
            return self._burn(rule)
        if isinstance(rule, SystemRule):
            return SYSTEM_READS[rule.name](self, rule)
        return self._live(rule) if is_live(rule) else self._points(rule)

    @staticmethod
    def sample(rule, labels: dict, value: float | None, cond: bool) -> dict:
        labels = {**labels, **rule.labels, "alertname": rule.name}
        return {fingerprint(labels): (labels, value, cond)}

    # -- threshold rules ----------------------------------------------------------------------
    def _live(self, rule) -> dict:
        keys = tuple(sorted(set(rule.selector) | set(rule.by)))
        lo, hi = live_window(self.now, parse_duration(rule.window))
        feedback = rule.metric in LIVE_FEEDBACK_METRICS
        read, compute = (rollups.live_feedback, feedback_metrics) if feedback else (rollups.live_requests,
                                                                                  request_metrics)
        segment = next((k for k in keys if k not in LIVE_LABELS), None)  # load_rules allows one, on requests
        if segment is not None:
            rows = self.once(("live-segment", lo, keys), rollups.live_segment_requests, self.store, lo, hi, keys,
                             segment)
        else:
            rows = self.once(("live", feedback, lo, keys), read, self.store, lo, hi, keys)
        # Every metric of a row at once, once per evaluation: rules on the same window share them.
        values = self.once(("live-values", feedback, segment, lo, keys), lambda: [compute(r) for r in rows])
        out = {}
        for row, metrics in zip(rows, values):
            labels = {k: row[k] for k in keys}
            if any(labels.get(k) != v for k, v in rule.selector.items()):
                continue
            if not feedback and row["requests"] < rule.min_requests:
                continue  # too few requests to tell either way: no data (the alert keeps its state)
            value = metrics[rule.metric]
            cond = value is not None and OPS[rule.op](value, rule.threshold)
            if not feedback:
                # Too few failures is an answer, not a lack of data: isolated failures are not an incident.
                failures = row["requests"] - row["ok"] if rule.metric == "availability" else (
                    row["errors"] + row["timeouts"])
                cond = cond and failures >= rule.min_failures
            out.update(self.sample(rule, labels, value, cond))
        return out

    def _points(self, rule) -> dict:
        keys = sorted(set(rule.selector) | set(rule.by))
        rows = self.once(("points", rule.metric, rule.window, rule.over, tuple(keys)), self.points.with_keys,
                          rule.metric, rule.window, self.now - rule.over, self.now, keys)
        series: dict[tuple, list] = {}
        newest: dict[tuple, dt.datetime] = {}
        for labels, ts, v in rows:
            if all(labels.get(k) == val for k, val in rule.selector.items()):
                key = tuple(sorted(labels.items()))
                series.setdefault(key, []).append(v)
                newest[key] = ts
        volumes = self._volumes(rule) if rule.min_requests else {}
        reviews = self._volumes(rule, "hallucination_reviews") if rule.min_reviews else {}
        baselines = self._baselines(rule, keys) if rule.baseline else {}
        out = {}
        for key, values in series.items():
            value = {"last": values[-1], "avg": sum(values) / len(values), "max": max(values),
                     "min": min(values)}[rule.aggregation]
            if rule.baseline:
                base = _before(baselines.get(key, []), newest[key] - dt.timedelta(seconds=WINDOWS[rule.window]))
                if not base:
                    continue  # nothing to compare with yet: no data
                value = value / base
            labels = dict(key)
            if rule.min_requests and volumes.get(_volume_key(labels), 0) < rule.min_requests:
                continue  # too few requests to tell either way: no data
            if rule.min_reviews and reviews.get(_volume_key(labels), 0) < rule.min_reviews:
                continue  # too few reviewed answers to tell: no data
            out.update(self.sample(rule, labels, value, OPS[rule.op](value, rule.threshold)))
        return out

    def _baselines(self, rule, keys: list[str]) -> dict[tuple, list[tuple[dt.datetime, float]]]:
        """Per series, its (ts, value) points over the baseline window, oldest first, as far back as one
        baseline window before the rule's span."""
        span = dt.timedelta(seconds=WINDOWS[rule.baseline] + WINDOWS[rule.window]) + rule.over
        rows = self.once(("points", rule.metric, rule.baseline, span, tuple(keys)), self.points.with_keys,
                          rule.metric, rule.baseline, self.now - span, self.now, keys)
        out: dict[tuple, list] = {}
        for labels, ts, v in rows:
            out.setdefault(tuple(sorted(labels.items())), []).append((ts, v))
        return out

    def _volumes(self, rule, metric: str = "requests") -> dict[tuple, float]:
        """Per series, the newest count ``metric`` says its window held (requests; reviewed answers)."""
        window = rule.window if rule.window in METRICS[metric][1] else "1h"
        over = max(rule.over, dt.timedelta(minutes=5))
        rows = self.once(("volumes", metric, window, over), self.points.newest, metric, window, self.now - over,
                          self.now)
        # Only the series of the rules' own label sets: a segment's (service, feature, language) series would
        # otherwise stand for its feature's volume.
        return {_volume_key(labels): v for labels, v in rows if labels.keys() <= VOLUME_LABELS}

    # -- SLO burn rates ------------------------------------------------------------------------
    def _burn(self, rule: BurnRateRule) -> dict:
        slo, cond, best = rule.slo_config, False, None
        counts = self.once(("slo",), self._slo_counts)[slo.name]
        for tier in rule.tiers:
            rates = []
            for window in (tier.long_window, tier.short_window):
                good, total = counts[window]
                if total == 0:
                    break  # no traffic in a window: no data for this tier, not "no errors"
                rates.append(Fraction(total - good, total) / error_budget(slo))  # exact, as the slo job's
            else:
                # Both windows must burn faster than the threshold: the smaller of the two decides.
                over = min(rates) / tier.threshold
                cond = cond or over > 1
                if best is None or over > best[0]:
                    best = (over, rates[0])
        if best is None:
            return {}
        return self.sample(rule, {}, float(best[1]), cond)

    def _slo_counts(self) -> dict[str, dict[str, tuple[int, int]]]:
        """SLO name -> window -> (good, total), over every window the burn-rate alerts use, every SLO in
        one query."""
        windows = sorted({w for _, tiers, _, _ in BURN_RATE_ALERTS for _, *pair in tiers for w in pair},
                         key=WINDOWS.__getitem__)
        spans = [live_window(self.now, dt.timedelta(seconds=WINDOWS[w])) for w in windows]
        return {name: dict(zip(windows, counts))
                for name, counts in rollups.slo_counts(self.store, self.config.slos, spans).items()}

# -- system rules: a registry of what each reads ------------------------------------------------------
SYSTEM_READS: dict[str, Callable[[Reads, SystemRule], dict]] = {}


def system_read(name: str):
    """Register the read of system rule ``name`` (alerts.rules.system_rules lists the rules)."""
    def register(fn):
        SYSTEM_READS[name] = fn
        return fn
    return register


@system_read("TrafficStopped")
def traffic_stopped(reads: Reads, rule) -> dict:
    system = reads.config.alerts.system
    per_after: dict[dt.timedelta, list] = {}
    out = {}
    counts = {}
    for after in {system.traffic_stopped_after} | {o.after for o in system.traffic_stopped if o.after}:
        lo, hi = live_window(reads.now, after)  # silent for at least ``after``
        counts[after] = reads.once(("traffic", after), rollups.requests_per_service, reads.store,
                                   [(lo, hi), (lo - dt.timedelta(hours=1), lo)])
        per_after[after] = sorted({svc for _, svc in counts[after]})
    for after, services in per_after.items():
        for service in services:
            if system.traffic_after(service) != after:
                continue
            recent, before = counts[after].get((0, service), 0), counts[after].get((1, service), 0)
            was_busy = before / 60 > system.traffic_stopped_min_per_minute
            if was_busy or recent:
                out.update(reads.sample(rule, {"service": service}, float(recent), was_busy and recent == 0))
    return out


@system_read("JobStalled")
def job_stalled(reads: Reads, rule) -> dict:
    limit = reads.config.alerts.system.job_stalled_intervals
    out = {}
    for job, last_ok in job_runs.last_successes(reads.store).items():
        interval = reads.job_intervals.get(job)
        if interval is None:
            continue
        age = (reads.now - last_ok).total_seconds()
        out.update(reads.sample(rule, {"job": job}, round(age), age > limit * interval.total_seconds()))
    return out


@system_read("IngestRejectRateHigh")
def ingest_reject_rate_high(reads: Reads, rule) -> dict:
    system = reads.config.alerts.system
    bad = rejected.count_between(reads.store, reads.now - REJECT_WINDOW, reads.now)
    good = rollups.requests_and_feedback(reads.store, *live_window(reads.now, REJECT_WINDOW))
    rate = bad / (bad + good) if bad + good else 0.0
    return reads.sample(rule, {}, rate, rate > system.ingest_reject_rate and bad >= system.ingest_reject_min)


@system_read("NotificationsUndeliverable")
def notifications_undeliverable(reads: Reads, rule) -> dict:
    failing = notification_outbox.undeliverable(reads.store, reads.now - dt.timedelta(hours=1),
                                                reads.config.alerts.system.undeliverable_attempts)
    out = {}
    for receiver in sorted({r.name for r in reads.config.alerts.receivers} | set(failing)):
        n = failing.get(receiver, 0)
        out.update(reads.sample(rule, {"receiver": receiver}, float(n), n > 0))
    return out


@system_read("Watchdog")
def watchdog(reads: Reads, rule) -> dict:
    return reads.sample(rule, {}, 1.0, True)


def _before(points: list[tuple[dt.datetime, float]], limit: dt.datetime) -> float | None:
    """The value of the newest point at or before ``limit``."""
    found = None
    for ts, v in points:
        if ts <= limit:
            found = v
    return found


VOLUME_LABELS = {"service", "feature", "model", "prompt_version"}


def _volume_key(labels: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in labels.items() if k in VOLUME_LABELS))


__all__ = ["Reads", "SYSTEM_READS", "fingerprint", "live_window"]
