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
# Segment dimensions that are columns; the tags promoted by segments.tags are budgeted in segment_tags, the
# raw tags keeping what was sent (the segment rollups count segment_tags).
SEGMENT_COLUMNS = ("language", "tenant")
DAYS_KEPT = 8  # days of admitted values held in memory (late events of older days reload theirs)


class CardinalityBudget:
    def __init__(self, store, config: Config):
        self.store = store
        self.config = config.cardinality
        self.tags = tuple(config.segments.tags)
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
        limits = [(dim, self.config.limits.of(dim)) for dim in DIMENSIONS + SEGMENT_COLUMNS]
        tag_limits = [(key, self.config.limits.of(key)) for key in self.tags]
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
                    if not self._admits(day, service, dim, row[dim], limit):
                        row["dimension_overflow"][dim] = row[dim]
                        row[dim] = ov
                        self.overflowed[(service, dim)] += 1
                segment_tags = row["segment_tags"]
                for key, limit in tag_limits:
                    if key in segment_tags and not self._admits(day, service, key, segment_tags[key], limit):
                        segment_tags[key] = ov  # the raw tags keep the value sent
                        self.overflowed[(service, key)] += 1

    def _admits(self, day: dt.date, service: str, dim: str, value: str, limit: int) -> bool:
        """Whether ``value`` is counted as itself: already admitted today, or admitted now within ``limit``."""
        seen = self._admitted[(day, service, dim)]
        if value in seen or value == self.config.overflow_value:
            return True
        if len(seen) < limit:
            seen.add(value)
            return True
        return False

    def _load(self, day: dt.date) -> None:
        segments = SEGMENT_COLUMNS + self.tags
        cap = max(self.config.services, *(self.config.limits.of(d) for d in DIMENSIONS + segments)) + 1
        for service, values in rollups.dimension_values_of_day(self.store, day, DIMENSIONS, cap).items():
            if service != self.config.overflow_value:
                self._admitted[(day, "", "service")].add(service)
            for dim, seen in values.items():
                self._admitted[(day, service, dim)].update(v for v in seen if v != self.config.overflow_value)
        for service, values in rollups.segment_values_of_day(self.store, day, segments, cap).items():
            for dim, seen in values.items():
                self._admitted[(day, service, dim)].update(v for v in seen if v != self.config.overflow_value)
        self._days.add(day)
        while len(self._days) > DAYS_KEPT:  # the oldest day goes: late events of it load it again
            old = min(self._days)
            self._days.discard(old)
            for key in [k for k in self._admitted if k[0] == old]:
                del self._admitted[key]
