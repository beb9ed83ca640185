"""``metric_points``: the one time-series table. Jobs write points; alerts, pages, the series API and
/metrics read them.

The table is a ReplacingMergeTree by ``computed_at``: a recomputed point is a second row until
parts merge, and the newest computation wins. Readers that need one value per point either read
with FINAL or keep the newest ``computed_at`` themselves (cheaper, same answer).
"""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple

COLUMNS = ["ts", "window", "metric", "labels", "value", "computed_at"]


class SeriesPoint(NamedTuple):
    labels: dict[str, str]
    ts: dt.datetime
    value: float


class LatestPoint(NamedTuple):
    metric: str
    window: str
    labels: dict[str, str]
    value: float


class RangePoint(NamedTuple):
    metric: str
    window: str
    label_set: int     # the index of its label set in the request
    ts: dt.datetime
    value: float


class SeriesValue(NamedTuple):
    labels: dict[str, str]
    value: float


def insert(store, rows: list[list]) -> int:
    """Rows of COLUMNS; a rerun's rows replace the earlier ones of the same (metric, window, labels, ts)."""
    return store.insert("metric_points", rows, COLUMNS)


def series(store, metric: str, window: str, lo: dt.datetime, hi: dt.datetime, filters: dict[str, str],
           keys: list[str] | None, limit: int) -> list[SeriesPoint]:
    """(labels, ts, value) of the metric's series in [lo, hi], ordered by series then time.

    ``filters`` label values a series must have; ``keys`` (when given) its exact label names,
    so service=x chooses the service-level series rather than every series below it.
    """
    conditions = " ".join(f"AND labels[{{k{i}:String}}] = {{v{i}:String}}" for i in range(len(filters)))
    params = {"metric": metric, "window": window, "lo": lo, "hi": hi, "limit": limit}
    for i, (k, v) in enumerate(filters.items()):
        params[f"k{i}"], params[f"v{i}"] = k, v
    if keys is not None:
        conditions += " AND arraySort(mapKeys(labels)) = {keys:Array(String)}"
        params["keys"] = keys
    return [SeriesPoint(*r) for r in store.query(
        "SELECT labels, ts, value FROM metric_points FINAL WHERE metric = {metric:String} "
        "AND `window` = {window:String} AND ts >= {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')} "
        f"{conditions} ORDER BY toString(labels), ts LIMIT {{limit:UInt32}}", params)]


def latest_of_every_series(store, since: dt.datetime, without: tuple[str, ...] = ()) -> list[LatestPoint]:
    """Every series' newest point since ``since`` (for /metrics), but those with a label in ``without``."""
    return [LatestPoint(*r) for r in store.query(
        "SELECT metric, `window`, labels, argMax(value, ts) FROM metric_points FINAL "
        "WHERE ts >= {since:DateTime64(3, 'UTC')} AND NOT hasAny(mapKeys(labels), {without:Array(String)}) "
        "GROUP BY metric, `window`, labels", {"since": since, "without": list(without)})]


def _series_id(i: int) -> str:
    return f"sipHash64(toString(mapSort(mapFromArrays({{k{i}:Array(String)}}, {{v{i}:Array(String)}}))))"


def in_ranges(store, wanted: dict[str, str], label_sets: list[dict[str, str]],
              ranges: list[tuple[dt.datetime, dt.datetime]], every: int = 60) -> list[RangePoint]:
    """(metric, window, label set index, ts, value) of exactly these series, in any of the (lo, hi] ranges,
    oldest computation first (so the last row of a point is its newest value).

    A series is found through the table's sort key (metric, window, series_id): series_id is the
    hash of the sorted label map, so the same hash computed in the query reads only that series'
    granules. ``every`` keeps only points at multiples of this many seconds.
    """
    params = {"metrics": list(wanted), "windows": sorted(set(wanted.values())), "every": max(1, every)}
    ids = []
    for i, labels in enumerate(label_sets):
        keys = sorted(labels)
        params[f"k{i}"], params[f"v{i}"] = keys, [labels[k] for k in keys]
        ids.append(_series_id(i))
    within = []
    for j, (lo, hi) in enumerate(ranges):
        params[f"lo{j}"], params[f"hi{j}"] = lo, hi
        within.append(f"(ts > {{lo{j}:DateTime64(3, 'UTC')}} AND ts <= {{hi{j}:DateTime64(3, 'UTC')}})")
    which = "multiIf(" + ", ".join(f"series_id = {s}, {i}" for i, s in enumerate(ids)) + ", -1)"
    return [RangePoint(*r) for r in store.query(
        f"SELECT metric, `window`, {which} AS which, ts, value FROM metric_points "
        f"WHERE metric IN {{metrics:Array(String)}} AND `window` IN {{windows:Array(String)}} "
        f"AND series_id IN ({', '.join(ids)}) AND ({' OR '.join(within)}) "
        "AND toUnixTimestamp(ts) % {every:UInt32} = 0 ORDER BY metric, which, ts, computed_at", params)]


def latest_by_label(store, metric: str, label: str, lo: dt.datetime, hi: dt.datetime) -> dict[str, float]:
    """label value -> the metric's newest value in (lo, hi] (e.g. each SLO's budget remaining)."""
    return dict(store.query(
        "SELECT labels[{label:String}], argMax(value, ts) FROM metric_points FINAL "
        "WHERE metric = {metric:String} AND ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')} "
        "GROUP BY labels[{label:String}]", {"metric": metric, "label": label, "lo": lo, "hi": hi}))


def points_with_keys(store, metric: str, window: str, lo: dt.datetime, hi: dt.datetime,
                     keys: list[str]) -> list[SeriesPoint]:
    """The points in (lo, hi] of every series with exactly these label names, the newest computation of
    each point, oldest point first."""
    return [SeriesPoint(*r) for r in store.query("""
SELECT labels, ts, argMax(value, computed_at) AS v
FROM metric_points
WHERE metric = {metric:String} AND window = {window:String}
  AND ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}
  AND arraySort(mapKeys(labels)) = {keys:Array(String)}
GROUP BY labels, ts ORDER BY ts""", {"metric": metric, "window": window, "lo": lo, "hi": hi, "keys": keys})]


def points_between(store, metric: str, window: str, lo: dt.datetime, hi: dt.datetime) -> list[SeriesPoint]:
    """Every series' points in (lo, hi], each at its newest computation, oldest first: what points_with_keys
    and newest_per_series read, for an alert replay that reads a stretch once and cuts it per evaluation."""
    return [SeriesPoint(*r) for r in store.query("""
SELECT labels, ts, argMax(value, computed_at) AS v
FROM metric_points
WHERE metric = {metric:String} AND window = {window:String}
  AND ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}
GROUP BY labels, ts ORDER BY ts""", {"metric": metric, "window": window, "lo": lo, "hi": hi})]


def newest_per_series(store, metric: str, window: str, lo: dt.datetime, hi: dt.datetime) -> list[SeriesValue]:
    """Each series' newest point in (lo, hi], each point at its newest computation."""
    return [SeriesValue(*r) for r in store.query("""
SELECT labels, argMax(value, ts) FROM (
    SELECT labels, ts, argMax(value, computed_at) AS value FROM metric_points
    WHERE metric = {metric:String} AND window = {window:String}
      AND ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}
    GROUP BY labels, ts)
GROUP BY labels""", {"metric": metric, "window": window, "lo": lo, "hi": hi})]


def newest_per_window(store, metric: str, windows: list[str], label: str, value: str, lo: dt.datetime,
                      hi: dt.datetime) -> dict[str, float]:
    """window -> newest value in (lo, hi] of the series whose ``label`` is ``value`` (an SLO's burn rates)."""
    return dict(store.query("""
SELECT window, argMax(value, ts) FROM (
    SELECT window, ts, argMax(value, computed_at) AS value FROM metric_points
    WHERE metric = {metric:String} AND window IN {windows:Array(String)} AND labels[{label:String}] = {value:String}
      AND ts > {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')}
    GROUP BY window, ts)
GROUP BY window""", {"metric": metric, "windows": windows, "label": label, "value": value, "lo": lo, "hi": hi}))
