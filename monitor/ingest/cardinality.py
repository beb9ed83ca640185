"""The cardinality budget at ingest: a bounded number of values per dimension reaches the rollups.

An application that puts an id into ``feature`` (or a hash into ``prompt_version``)
would otherwise make every rollup, every metric series, every per-feature job
and every page grow with it until the monitor stops answering. So, per UTC day,
each (service, dimension) admits its first ``cardinality.limits`` distinct
values (and the day its first ``cardinality.services`` services); a request with
a value beyond that has the dimension stored as ``cardinality.overflow_value``,
which is what the rollups, jobs and pages count, and the real value kept on the
raw row in ``dimension_overflow``.

The admitted values live in this process, loaded per day from the day rollup
(which holds exactly what was admitted) the first time the day is seen. Several
API processes each admit on their own, so a limit can be exceeded by as many
values as there are processes; it stays bounded, which is the point.
"""
from __future__ import annotations

import collections
import datetime as dt
import threading

from monitor.foundation.config import Config
from monitor.foundation.tables import rollups

DIMENSIONS = ("feature", "model", "prompt_version", "environment", "region")
DAYS_KEPT = 8  # days of admitted values held in memory (late events of older days reload theirs)


class CardinalityBudget:
    def __init__(self, store, config: Config):
        self.store = store
        self.config = config.cardinality
        self._admitted: dict[tuple[dt.date, str, str], set[str]] = collections.defaultdict(set)
        self._days: set[dt.date] = set()
        self._lock = threading.Lock()
        # (service, dimension) -> requests stored under the overflow value by this process.
        self.overflowed: collections.Counter[tuple[str, str]] = collections.Counter()

    def apply(self, rows: list[dict]) -> None:
        """Replace the values over budget by the overflow value, in arrival order (the first values of
        the day are admitted); keep the real ones in each row's ``dimension_overflow``."""
        for row in rows:
            row["dimension_overflow"] = {}
        if not self.config.enabled or not rows:
            return
        ov = self.config.overflow_value
        limits = [(dim, getattr(self.config.limits, dim)) for dim in DIMENSIONS]
        with self._lock:
            for row in rows:
                day = row["ts"].date()
                if day not in self._days:
                    self._load(day)
                service = row["service"]
                seen = self._admitted[(day, "", "service")]
                if service not in seen and service != ov:
                    if len(seen) < self.config.services:
                        seen.add(service)
                    else:
                        row["dimension_overflow"]["service"] = service
                        row["service"] = service = ov
                        self.overflowed[(ov, "service")] += 1
                for dim, limit in limits:
                    value = row[dim]
                    seen = self._admitted[(day, service, dim)]
                    if value in seen or value == ov:
                        continue
                    if len(seen) < limit:
                        seen.add(value)
                    else:
                        row["dimension_overflow"][dim] = value
                        row[dim] = ov
                        self.overflowed[(service, dim)] += 1

    def _load(self, day: dt.date) -> None:
        cap = max(self.config.services, *(getattr(self.config.limits, d) for d in DIMENSIONS)) + 1
        for service, values in rollups.dimension_values_of_day(self.store, day, DIMENSIONS, cap).items():
            if service != self.config.overflow_value:
                self._admitted[(day, "", "service")].add(service)
            for dim, seen in values.items():
                self._admitted[(day, service, dim)].update(v for v in seen if v != self.config.overflow_value)
        self._days.add(day)
        while len(self._days) > DAYS_KEPT:  # the oldest day goes: late events of it load it again
            old = min(self._days)
            self._days.discard(old)
            for key in [k for k in self._admitted if k[0] == old]:
                del self._admitted[key]
