"""``reconcile``: the rollups converge to exactly what the raw tables hold, without a manual rebuild.

Materialized views fill the rollups in the same INSERT as the raw rows, but not
atomically with them: a process killed between the raw part and a view's part
leaves raw rows the rollups never counted, and the client's resend is then
(rightly) dropped as a duplicate. This job finds and repairs such buckets.

Each run, over the last ``jobs.reconcile_horizon`` (whole UTC days):

1. raw rows per day against the minute rollup per day (requests: from the
   parts' metadata, no rows read), and only for the days that differ, raw rows
   per minute (FINAL: the truth) against the minute rollup per minute;
2. every coarser rollup against the one it is built from (hour against minutes,
   day against hours, the per-feature tables against the full ones), per bucket:
   rollup rows only, cheap.

A bucket that differs in two consecutive runs is rebuilt: the minute tables
from the raw rows with the views' own SELECT, the coarser ones by merging the
finer rows. Two runs, because an insert of another process may be between its
raw part and its views' parts when one run looks; a real loss persists. The
repair itself holds the raw-write lock, so no insert of this process is halfway
through its views, and buckets whose coarser tables were built from a repaired
one are re-checked and repaired in the same run. A repair racing an insert of
another process may count that insert twice; the next runs see it and repair
again, so the rollups still converge.

So a lost or doubled count is repaired within two runs of this job (every
``jobs.schedule.reconcile``, 1 minute by default) once it is in the horizon.
Feedback stored before its request arrived is attributed to it here too (the
first run after the request arrives), and its orphan bucket repaired two runs
later, by the same mechanism. What was repaired is logged, and written as
``rollup_buckets_repaired`` and ``rollup_rows_repaired`` per table, and
``feedback_attributed``. The sli, slo and cost jobs recompute
``jobs.recompute`` (cost: ``outcomes.feedback_delay``) on every run, so their
points for a repaired minute are right again within minutes.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Iterable

from monitor.foundation.job import Job
from monitor.foundation.metrics import Point, floor_to
from monitor.foundation.rollups import LINEAGE
from monitor.foundation.tables import feedback, requests, rollups
from monitor.foundation.tables._raw import RAW_WRITES

log = logging.getLogger(__name__)
DAY = dt.timedelta(days=1)
FAMILIES = ("requests", "feedback")


def _minute_table(family: str) -> str:
    return next(t for t, source, *_ in LINEAGE if source == family)


class ReconcileJob(Job):
    name = "reconcile"
    description = "rollups against the raw rows: buckets that differ twice are rebuilt"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._suspects: set[tuple[str, dt.datetime]] = set()  # (table, bucket) that differed last run

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        days = max(1, int(self.config.jobs.reconcile_horizon.total_seconds() // 86400))
        hi = floor_to(end, 86400) + DAY
        lo = hi - days * DAY
        adopted = self.adopt_orphans(lo)
        differing = self.differences(lo, hi)
        confirmed = {k: v for k, v in differing.items() if k in self._suspects}
        self._suspects = set(differing) - set(confirmed)
        repaired = self.repair(confirmed, lo, hi) if confirmed else {}
        at = floor_to(end, 60)
        if adopted:
            yield Point(at, "1m", "feedback_attributed", {}, float(adopted))
        for table, (buckets, rows) in sorted(repaired.items()):
            yield Point(at, "1m", "rollup_buckets_repaired", {"table": table}, float(buckets))
            yield Point(at, "1m", "rollup_rows_repaired", {"table": table}, float(rows))

    # -- feedback that arrived before its request ---------------------------------------------
    def adopt_orphans(self, since: dt.datetime) -> int:
        """Give feedback stored before its request the request's time, dimensions and status, now that
        the request is stored. The rows are written as newer versions of themselves (the raw table holds
        them once under FINAL); their views count them in the request's bucket, and the orphan bucket
        they were counted in differs from the raw rows until this job rebuilds it, two runs later."""
        with RAW_WRITES:
            found = feedback.orphans(self.store, since)
            if not found:
                return 0
            context = requests.context_of(self.store, {f["request_id"] for f in found})
            adopted = [f for f in found if f["request_id"] in context]
            now = self.clock.now()
            for f in adopted:
                req = context[f["request_id"]]
                f.update(request_ts=req["ts"], request_status=req["status"], ingested_at=now,
                         **{d: req[d] for d in requests.CONTEXT})
            feedback.insert(self.store, adopted)
        if adopted:
            log.info("reconcile: attributed %d feedback row(s) that arrived before their request", len(adopted))
        return len(adopted)

    # -- finding --------------------------------------------------------------------------
    def differences(self, lo: dt.datetime, hi: dt.datetime) -> dict[tuple[str, dt.datetime], tuple[int, int]]:
        """(table, bucket) -> (rows it should count, rows it counts), for every bucket that differs."""
        out = {}
        for family in FAMILIES:
            out.update(self._minutes_against_raw(family, lo, hi))
        for table, source, _, seconds, _, _ in LINEAGE:
            if source not in FAMILIES:
                out.update(self._against_source(table, source, seconds, lo, hi))
        return out

    def _minutes_against_raw(self, family: str, lo: dt.datetime, hi: dt.datetime) -> dict:
        table = _minute_table(family)
        raw_days = rollups.raw_counts_per_day(self.store, family, lo, hi)
        rollup_days = {b.date(): n for b, n in rollups.counts_per_bucket(self.store, table, lo, hi, 86400).items()}
        out = {}
        for day in sorted(set(raw_days) | set(rollup_days)):
            if raw_days.get(day, 0) == rollup_days.get(day, 0):
                continue
            d0 = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
            raw = rollups.raw_counts_per_minute(self.store, family, d0, d0 + DAY)
            counted = rollups.counts_per_bucket(self.store, table, d0, d0 + DAY)
            for minute in set(raw) | set(counted):
                if raw.get(minute, 0) != counted.get(minute, 0):
                    out[(table, minute)] = (raw.get(minute, 0), counted.get(minute, 0))
        return out

    def _against_source(self, table: str, source: str, seconds: int, lo: dt.datetime, hi: dt.datetime) -> dict:
        expected = rollups.counts_per_bucket(self.store, source, lo, hi, seconds)
        counted = rollups.counts_per_bucket(self.store, table, lo, hi)
        return {(table, b): (expected.get(b, 0), counted.get(b, 0)) for b in set(expected) | set(counted)
                if expected.get(b, 0) != counted.get(b, 0)}

    # -- repairing --------------------------------------------------------------------------
    def repair(self, confirmed: dict, lo: dt.datetime, hi: dt.datetime) -> dict[str, tuple[int, int]]:
        """Rebuild the confirmed buckets, finest tables first, then whatever coarser bucket was built
        from them and now differs. Returns table -> (buckets rebuilt, rows they were off by)."""
        done: dict[str, tuple[int, int]] = {}
        rebuilt: dict[str, list[dt.datetime]] = {}
        with RAW_WRITES:
            for table, source, _, seconds, _, _ in LINEAGE:
                # Looked at again under the lock (an insert of this process may have finished
                # meanwhile), and a coarser table only after the finer ones are repaired: a bucket
                # built from a rebuilt bucket is repaired in the same pass when it still differs.
                if source in FAMILIES:
                    current = self._minutes_against_raw(source, lo, hi)
                else:
                    current = self._against_source(table, source, seconds, lo, hi)
                step = dt.timedelta(seconds=seconds)
                todo = {k: v for k, v in current.items()
                        if k in confirmed or any(k[1] <= s < k[1] + step for s in rebuilt.get(source, ()))}
                if not todo:
                    continue
                buckets = sorted(b for _, b in todo)
                off = sum(abs(expected - counted) for expected, counted in todo.values())
                rollups.rebuild_buckets(self.store, table, buckets)
                rebuilt[table] = buckets
                done[table] = (len(buckets), off)
                log.warning("reconcile: rebuilt %d bucket(s) of %s from %s (%d rows off), first %s",
                            len(buckets), table, source, off, buckets[0].isoformat())
        return done
