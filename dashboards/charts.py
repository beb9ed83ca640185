"""Chart data for the pages: series from ``metric_points`` chosen by their exact label sets, plus markers."""
from __future__ import annotations

import datetime as dt

from dashboards.scope import in_scope
from monitor.foundation.clock import iso_utc
from monitor.foundation.metrics import WINDOWS
from monitor.foundation.tables import alert_history, metric_points, rollups
from monitor.foundation.tables.rollups import PromptChange

STEPS = ((dt.timedelta(hours=36), "5m"), (dt.timedelta(days=8), "1h"), (None, "1d"))


def step_for(span: dt.timedelta) -> str:
    for limit, step in STEPS:
        if limit is None or span <= limit:
            return step
    return "1d"


def fetch(store, wanted: dict[str, str], label_sets: list[dict[str, str]], lo: dt.datetime,
          hi: dt.datetime, every: int = 60) -> dict[tuple[str, int], list[tuple[str, float]]]:
    """{(metric, label set index): [(iso ts, value)]} for metric -> window in ``wanted``, over (lo, hi].

    ``every``: keep only points at multiples of this many seconds (trailing windows such
    as burn rates are written every minute; a week of them is too many to draw).
    """
    return fetch_ranges(store, wanted, label_sets, [(lo, hi)], every)[0]


def fetch_ranges(store, wanted: dict[str, str], label_sets: list[dict[str, str]],
                 ranges: list[tuple[dt.datetime, dt.datetime]], every: int = 60) -> list[dict]:
    """fetch for several time ranges in one query (an incident and the same window a week before): a dict per range."""
    out: list[dict] = [{} for _ in ranges]
    if not wanted or not label_sets or not ranges:
        return out
    rows = metric_points.in_ranges(store, wanted, label_sets, ranges, every)
    # Not FINAL: a recomputed point is a second row until parts merge, and the newest (computed_at)
    # wins, as the table's own merge would decide; deciding here costs far less than FINAL.
    newest = {}
    for metric, window, which, ts, value in rows:
        if wanted.get(metric) == window and which >= 0:
            newest[(metric, which, ts)] = value  # rows come oldest computation first
    for (metric, which, ts), value in newest.items():
        for j, (lo, hi) in enumerate(ranges):  # ranges may overlap: a point can belong to both
            if lo < ts <= hi:
                out[j].setdefault((metric, which), []).append((iso_utc(ts), value))
    return out


def chart(chart_id: str, title: str, unit: str, traces: list[dict], lines: list[dict] | None = None,
          help_text: str = "", window: str | None = None) -> dict:
    """A chart for static/app.js. ``window`` names the points' bucket (a metric window such as 1d): the
    time axis never ticks finer than it, so day points get day ticks, a single point included."""
    return {"id": chart_id, "title": title, "unit": unit, "traces": traces, "lines": lines or [], "help": help_text,
            "bucket": WINDOWS.get(window or "", 0)}


def trace(name: str, points: list[tuple[str, float]], **extra) -> dict:
    return {"name": name, "x": [p[0] for p in points], "y": [p[1] for p in points], **extra}


def alert_markers(store, lo: dt.datetime, hi: dt.datetime, labels: dict[str, str]) -> list[dict]:
    """Alerts that started firing in the range on these labels (or on no service at all)."""
    # hi is inclusive here: an alert that fired in the last millisecond of the range is shown.
    rows = alert_history.fired(store, lo, hi + dt.timedelta(milliseconds=1), limit=200)
    out = []
    for r in rows:
        if in_scope(r.labels, labels):
            out.append({"x": iso_utc(r.ts), "label": r.rule, "kind": "alert"})
    return out


def prompt_changes(store, lo: dt.datetime, hi: dt.datetime, service: str = "",
                   feature: str = "") -> list[PromptChange]:
    """Prompt versions first served in [lo, hi), to the minute, per service and feature, oldest first.

    "First" is over all the rollups hold (retention), so a version is new once.
    """
    return sorted((c for c in rollups.prompt_versions_first_seen(store, lo, hi, service, feature)
                   if lo <= c.first_seen < hi), key=lambda c: c.first_seen)


def prompt_markers(changes: list[PromptChange], found: list | None = None) -> list[dict]:
    """A marker per new prompt version, linked to its release (``found``: releases.Release rows) when one
    of its feature started with that version within the hour."""
    out = []
    for c in changes:
        marker = {"x": iso_utc(c.first_seen), "label": f"prompt {c.prompt_version}", "kind": "prompt"}
        release = next((r for r in found or () if (r.service, r.feature, r.dimension, r.value) ==
                        (c.service, c.feature, "prompt_version", c.prompt_version)
                        and abs(r.ts - c.first_seen) <= dt.timedelta(hours=1)), None)
        if release is not None:
            marker["href"] = f"/releases/{release.release_id}"
        out.append(marker)
    return out
