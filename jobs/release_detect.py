"""Releases found in the traffic: when a value of a release dimension (a prompt version, a model) starts taking
a feature's traffic while another is live, and how it rolls out.

Pure over hourly request counts per value (the ``releases`` job reads them from the hourly rollup). A value
is *on* from its first hour with traffic until it is missing for longer than chance allows: the feature served
requests in which, at the value's share since it turned on (over SHARE_OVER at most), OFF_AFTER of them were
expected and none came (at a 20% canary 50 requests without it; at 100%, 10). So a quiet night, a small
canary's empty hour or a model that takes 1% of the traffic (and 40% for a while) does not end it, and a
value that replaced another is off within the hour. A value turning on while another is on is a release of it;
the previous value is the one with the most traffic in the hour before. The mode follows the traffic:
``before_after`` when the previous value is off within ROLLOUT_AT_ONCE of the start, else ``canary`` while both
take traffic, fully rolled out when the previous value goes off.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

HOUR = dt.timedelta(hours=1)
OFF_AFTER = 10.0            # expected requests of a value that did not come: it stopped taking traffic
ROLLOUT_AT_ONCE = HOUR      # the previous value gone this soon after the start: a before/after release
SHARE_OVER = dt.timedelta(days=7)  # a value's share is over its hours on, at most this far back


@dataclass
class Found:
    value: str
    start: dt.datetime                    # the first hour the value took traffic
    previous_value: str
    full_rollout: dt.datetime | None      # the hour the previous value went off (None: still on)
    ended: dt.datetime | None             # the hour the value itself went off
    both_hours: list[dt.datetime] = field(default_factory=list)  # hours where both took traffic

    @property
    def mode(self) -> str:
        if self.full_rollout is not None and self.full_rollout - self.start <= ROLLOUT_AT_ONCE:
            return "before_after"
        return "canary"


def find(hours: dict[dt.datetime, dict[str, int]], warmup_until: dt.datetime) -> list[Found]:
    """``hours``: hour -> value -> requests of one feature's dimension, in any order; hours without traffic
    may be absent. Values on in the hours before ``warmup_until`` were live before the scan: only starts from
    then on are releases."""
    on: dict[str, dt.datetime | None] = {}   # value -> the hour it turned on (None: off)
    missing: dict[str, float] = {}
    last_seen: dict[str, dt.datetime] = {}
    seen: list[tuple[dt.datetime, int, dict[str, int]]] = []   # (hour, total, counts) with traffic
    found: list[Found] = []
    open_: dict[str, Found] = {}          # value -> its release while it is on
    waiting_prev: dict[str, list[Found]] = {}  # previous value -> releases waiting for it to go off

    def share(value: str, now: dt.datetime) -> float:
        since = max(on[value], now - SHARE_OVER)
        mine = total = 0
        for hour, t, counts in reversed(seen):
            if hour < since:
                break
            mine += counts.get(value, 0)
            total += t
        return mine / total if total else 0.0

    for hour in sorted(hours):
        counts = {v: c for v, c in hours[hour].items() if c > 0}
        total = sum(counts.values())
        if not total:
            continue
        live = [v for v, since in on.items() if since is not None]
        live_before = max(live, key=lambda v: share(v, hour), default=None)
        seen.append((hour, total, counts))
        for value in counts:
            if on.get(value) is None:
                on[value] = hour
                if hour >= warmup_until and live_before is not None and live_before != value:
                    f = Found(value, hour, live_before, None, None)
                    found.append(f)
                    open_[value] = f
                    waiting_prev.setdefault(live_before, []).append(f)
            missing[value] = 0.0
            last_seen[value] = hour
        for value in live:
            if value not in counts:
                missing[value] += total * share(value, hour)
                if missing[value] >= OFF_AFTER:
                    on[value] = None
                    off = last_seen[value] + HOUR
                    if value in open_:
                        open_.pop(value).ended = off
                    for f in waiting_prev.pop(value, []):
                        f.full_rollout = off
        for f in open_.values():
            if f.full_rollout is None and f.previous_value in counts and f.value in counts:
                f.both_hours.append(hour)
    return found
