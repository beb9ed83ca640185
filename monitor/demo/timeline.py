"""When demo traffic happens: the window, the diurnal load curve and the injected incidents.

Times are integer epoch milliseconds throughout: the generator handles
hundreds of thousands of timestamps, and datetime arithmetic per event would
dominate its run time.
"""
from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from functools import lru_cache

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

REGRESSED_PROMPT = "v8"  # the prompt version the latency-regression incident deploys
# In a window of three days or more it goes out as a canary first: this share of draft-email's traffic from
# CANARY_HOURS before the full rollout.
CANARY_SHARE, CANARY_HOURS = 0.2, 24
# The share of German summaries that fail while the locale incident lasts. German is about a seventh of the
# summaries: the feature's error rate rises by under 2 points (less than the hidden-regression rule calls a
# rise of the whole), the German segment's by about 12.
LOCALE_FAILURE = 0.12


# -- time ----------------------------------------------------------------------
def to_ms(ts: dt.datetime) -> int:
    return (ts - EPOCH) // dt.timedelta(milliseconds=1)


def from_ms(ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=ms)


@lru_cache(maxsize=4096)
def _minute_prefix(minute: int) -> str:
    return from_ms(minute * MINUTE_MS).strftime("%Y-%m-%dT%H:%M:")


def iso(ms: int) -> str:
    # strftime per event would dominate the run time; the minute prefix is shared by ~60 s of events.
    minute, rest = divmod(ms, MINUTE_MS)
    sec, milli = divmod(rest, SECOND_MS)
    return f"{_minute_prefix(minute)}{sec:02d}.{milli:03d}Z"


def window(days: float, end: dt.datetime) -> tuple[int, int]:
    end_ms = to_ms(end)
    return end_ms - round(days * DAY_MS), end_ms


# Diurnal cosine peaking at 13:00 UTC: 1.15 +/- 0.85 gives 2.0 at the peak and 0.3
# at the trough before normalising; weekends run at 60 %.
_DIURNAL_MEAN, _DIURNAL_AMPLITUDE, _PEAK_HOUR, _WEEKEND = 1.15, 0.85, 13.0, 0.6
_LOAD_NORM = _DIURNAL_MEAN * (5 + 2 * _WEEKEND) / 7  # so a whole week averages exactly rps


def load_factor(ms: int) -> float:
    """Traffic at this moment as a multiple of the mean rate."""
    hour = (ms / HOUR_MS) % 24
    weekend = (ms // DAY_MS + 3) % 7 >= 5  # 1970-01-01 was a Thursday
    level = _DIURNAL_MEAN + _DIURNAL_AMPLITUDE * math.cos(2 * math.pi * (hour - _PEAK_HOUR) / 24)
    return level * (_WEEKEND if weekend else 1.0) / _LOAD_NORM


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam < 30:  # Knuth: exact and cheap while exp(-lam) stays far from underflow
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


# -- incidents -----------------------------------------------------------------
@dataclass(frozen=True)
class Incident:
    key: str
    name: str
    service: str
    feature: str
    start_ms: int
    end_ms: int
    what: str
    # A story told in days (the segment views, a day's hidden-regression verdict), not minutes: the demo's
    # history needs no minute windows nor alert evaluations around it.
    daily: bool = False
    # A canary: until then only CANARY_SHARE of the feature's traffic is affected (0: all of it from the start).
    full_ms: int = 0

    def covers(self, ms: int) -> bool:
        return self.start_ms <= ms < self.end_ms


def incident_map(start_ms: int, end_ms: int, enabled: bool = True) -> dict[str, Incident]:
    """Positions are shares of the window. In a window of three days or more they all fall past its middle,
    so the default 14 days have a full week of normal traffic before each incident (the incident explorer's
    "week before") and every period choice up to 7 days a full previous period.

    The two short incidents start at the busiest moment of a slot (a burst at
    4 a.m. would hold a handful of requests and be invisible). Durations are
    capped by a share of the window, so a short demo gets shorter incidents;
    the slots are chosen so those never overlap each other or the prompt change.
    There the topic shift lasts a day from 08:00 UTC, so its UTC day's drift comparison
    is mostly shifted and its hours are busy enough to compare.

    ``enabled`` False (live traffic after the history): no incidents, every one empty.
    """
    span = end_ms - start_ms
    if not enabled:
        return {k: Incident(k, k, "", "", start_ms, start_ms, "") for k in ("burst", "spike", "prompt", "shift",
                                                                            "locale")}
    snap = MINUTE_MS if span >= HOUR_MS else 1  # whole minutes read better on a dashboard

    def at(share: float) -> int:
        t = start_ms + int(span * share)
        return max(start_ms, t - t % snap)

    def busiest(lo_share: float, hi_share: float) -> int:
        lo, hi = at(lo_share), at(hi_share)
        step = max(snap, (hi - lo) // 48 // snap * snap)
        return max(range(lo, hi + 1, step), key=load_factor)  # first maximum, so deterministic

    def lasting(start: int, nominal_ms: int, cap_share: float) -> int:
        return min(end_ms, start + max(1, min(nominal_ms, int(span * cap_share))))

    if span >= 3 * DAY_MS:
        # All past the middle (a full week before each in the default 14 days); the prompt change ships
        # at the busiest moment of its slot, as deploys happen in working hours.
        burst, spike, prompt = busiest(0.55, 0.61), busiest(0.63, 0.67), busiest(0.70, 0.74)
        canary = prompt - CANARY_HOURS * HOUR_MS
        # The two long incidents end well before the window does (a rollback; the launch buzz fades), so
        # their alerts resolve within the demo: the slow SLO ticket holds about 12 hours past its end. The
        # regression lasts long enough (about 1.8 days of 14) that its 3-day burn rate passes the ticket's 1x.
        rollback = at(0.86)
        # From 08:00 UTC, as the working day starts, for a day: its hourly windows hold enough requests to
        # be compared from the first hour on, and two thirds of its UTC day's traffic is shifted.
        shift = at(0.84) - at(0.84) % DAY_MS + 8 * HOUR_MS
        settled = min(shift + DAY_MS, end_ms)
        # The two UTC days before the window's last one and that day's part: each whole day's verdict finds
        # it against the 7 days before, and a 7-day period holds enough of it to show against the one before.
        locale = max(start_ms, end_ms - end_ms % DAY_MS - 2 * DAY_MS)
    else:  # a short window (tests): room for each incident and its alerts, not for a week before
        burst, spike, prompt = busiest(0.20, 0.42), busiest(0.48, 0.56), at(0.65)
        rollback, shift, settled, locale = at(0.83), at(0.75), at(0.89), at(0.90)
        canary = prompt
    rows = (
        Incident("burst", "error burst", "support-bot", "answer", burst, lasting(burst, 20 * MINUTE_MS, 0.05),
                 "the provider's us-east-1 endpoint fails: about 90% of that region's answers get upstream "
                 "502/503 (a third of all answers); its users' satisfaction drops"),
        Incident("spike", "cost spike", "copilot", "translate", spike, lasting(spike, 2 * HOUR_MS, 0.08),
                 "users paste whole documents, which translate routes to the larger claude-3-opus (about 6x "
                 "the tokens at 5x the price): its share of the traffic goes from 1% to 40%"),
        Incident("prompt", "latency regression after prompt change", "copilot", "draft-email", canary, rollback,
                 f"prompt_version v7 -> {REGRESSED_PROMPT}"
                 + (f", a canary at {CANARY_SHARE:.0%} for {CANARY_HOURS} hours, then all traffic"
                    if canary < prompt else "")
                 + ": p95 latency roughly doubles, longer outputs; rolled back", full_ms=prompt),
        Incident("shift", "topic shift", "support-bot", "answer", shift, settled,
                 "about 40% of questions are about the AI Assistant plan and crypto payouts, "
                 "which the knowledge base does not cover, until the launch buzz fades"),
        Incident("locale", "German summaries broken", "support-bot", "summarize", locale, end_ms,
                 f"about {LOCALE_FAILURE:.0%} of German summaries fail output validation (a prompt change broke "
                 "them); the feature's error rate barely moves, the segment views and the hidden-regression "
                 "check show it", daily=True),
    )
    return {r.key: r for r in rows}


def incidents(days: float, end: dt.datetime) -> list[dict]:
    """The injected incidents with absolute UTC start/end datetimes, name, service, feature
    and a one-line description (``what``), in start order."""
    start_ms, end_ms = window(days, end)
    return [{"name": i.name, "service": i.service, "feature": i.feature,
             "start": from_ms(i.start_ms), "end": from_ms(i.end_ms), "what": i.what, "daily": i.daily}
            for i in sorted(incident_map(start_ms, end_ms).values(), key=lambda i: i.start_ms)]


@dataclass(frozen=True)
class Release:
    """A prompt change that goes well: ``share`` of the feature's traffic from ``start_ms`` (a canary) until
    ``full_ms``, then all of it."""
    feature: str
    version: str
    start_ms: int
    full_ms: int
    share: float

    def serves(self, ms: int, draw: float) -> bool:
        return ms >= self.full_ms or (ms >= self.start_ms and draw < self.share)


def releases(start_ms: int, end_ms: int) -> list[Release]:
    """The demo's releases that pass: a before/after prompt change of query-rewrite and a canary of translate,
    in the first half of a window of three days or more (none in a shorter one), at working hours."""
    span = end_ms - start_ms
    if span < 3 * DAY_MS:
        return []

    def nine_am(share: float) -> int:
        t = start_ms + int(span * share)
        return t - t % DAY_MS + 9 * HOUR_MS
    rewrite, translate = nine_am(0.3), nine_am(0.42)
    return [Release("query-rewrite", RELEASED["query-rewrite"], rewrite, rewrite, 1.0),
            Release("translate", RELEASED["translate"], translate, translate + 6 * HOUR_MS, 0.5)]


# The versions those releases leave live: the live traffic after serve --demo's history serves them.
RELEASED = {"query-rewrite": "v4", "translate": "v6"}
