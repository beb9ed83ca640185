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
        self._days: collections.OrderedDict[dt.date, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        # (service, dimension) -> requests stored under the overflow value by this process.
        self.overflowed: collections.Counter[tuple[str, str]] = collections.Counter()

    def apply(self, row: dict) -> None:
        """Replace the values over budget by the overflow value; keep the real ones in ``dimension_overflow``."""
        real: dict[str, str] = {}
        if self.config.enabled:
            day = row["ts"].date()
            with self._lock:
                self._load(day)
                if not self._admit(day, "", "service", row["service"], self.config.services):
                    real["service"] = row["service"]
                    row["service"] = self.config.overflow_value
                for dim in DIMENSIONS:
                    if not self._admit(day, row["service"], dim, row[dim], getattr(self.config.limits, dim)):
                        real[dim] = row[dim]
                        row[dim] = self.config.overflow_value
                for dim in real:
                    self.overflowed[(row["service"], dim)] += 1
        row["dimension_overflow"] = real

    def _admit(self, day: dt.date, service: str, dim: str, value: str, limit: int) -> bool:
        if value == self.config.overflow_value:
            return True  # counting as overflow already: it costs nothing
        seen = self._admitted[(day, service, dim)]
        if value in seen:
            return True
        if len(seen) >= limit:
            return False
        seen.add(value)
        return True

    def _load(self, day: dt.date) -> None:
        if day in self._days:
            self._days.move_to_end(day)
            return
        cap = max(self.config.services, *(getattr(self.config.limits, d) for d in DIMENSIONS)) + 1
        for service, values in rollups.dimension_values_of_day(self.store, day, DIMENSIONS, cap).items():
            if service != self.config.overflow_value:
                self._admitted[(day, "", "service")].add(service)
            for dim, seen in values.items():
                self._admitted[(day, service, dim)].update(v for v in seen if v != self.config.overflow_value)
        self._days[day] = None
        while len(self._days) > DAYS_KEPT:
            old, _ = self._days.popitem(last=False)
            for key in [k for k in self._admitted if k[0] == old]:
                del self._admitted[key]
