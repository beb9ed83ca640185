"""Chart data for the pages: series from ``metric_points`` chosen by their exact label sets, plus markers.

A series is found through the table's sort key (metric, window, series_id):
series_id is the hash of the sorted label map, so the same hash computed in
the query reads only that series' granules.
"""
from __future__ import annotations

import datetime as dt

from monitor.clock import iso_utc, utc

STEPS = ((dt.timedelta(hours=36), "5m"), (dt.timedelta(days=8), "1h"), (None, "1d"))


def step_for(span: dt.timedelta) -> str:
    for limit, step in STEPS:
        if limit is None or span <= limit:
            return step
    return "1d"


def _series_id(i: int) -> str:
    return f"sipHash64(toString(mapSort(mapFromArrays({{k{i}:Array(String)}}, {{v{i}:Array(String)}}))))"


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
    # Not FINAL: a recomputed point is a second row until parts merge, and the newest (computed_at)
    # wins, as the table's own merge would decide; deciding here costs far less than FINAL.
    rows = store.query(
        f"SELECT metric, `window`, {which} AS which, ts, value FROM metric_points "
        f"WHERE metric IN {{metrics:Array(String)}} AND `window` IN {{windows:Array(String)}} "
        f"AND series_id IN ({', '.join(ids)}) AND ({' OR '.join(within)}) "
        "AND toUnixTimestamp(ts) % {every:UInt32} = 0 ORDER BY metric, which, ts, computed_at", params)
    newest = {}
    for metric, window, which, ts, value in rows:
        if wanted.get(metric) == window and which >= 0:
            newest[(metric, which, ts)] = value  # rows come oldest computation first
    for (metric, which, ts), value in newest.items():
        t = utc(ts)
        for j, (lo, hi) in enumerate(ranges):  # ranges may overlap: a point can belong to both
            if utc(lo) < t <= utc(hi):
                out[j].setdefault((metric, which), []).append((iso_utc(t), value))
    return out


def chart(chart_id: str, title: str, unit: str, traces: list[dict], lines: list[dict] | None = None,
          help_text: str = "") -> dict:
    return {"id": chart_id, "title": title, "unit": unit, "traces": traces, "lines": lines or [], "help": help_text}


def trace(name: str, points: list[tuple[str, float]], **extra) -> dict:
    return {"name": name, "x": [p[0] for p in points], "y": [p[1] for p in points], **extra}


def alert_markers(store, lo: dt.datetime, hi: dt.datetime, labels: dict[str, str]) -> list[dict]:
    """Alerts that started firing in the range on these labels (or on no service at all)."""
    rows = store.query_dicts(
        "SELECT ts, rule, labels, value FROM alert_history WHERE to_state = 'firing' AND from_state != 'firing' "
        "AND ts >= {lo:DateTime64(3, 'UTC')} AND ts <= {hi:DateTime64(3, 'UTC')} ORDER BY ts LIMIT 200",
        {"lo": lo, "hi": hi})
    out = []
    for r in rows:
        if all(not r["labels"].get(k) or r["labels"][k] == v for k, v in labels.items()):
            out.append({"x": iso_utc(r["ts"]), "label": r["rule"], "kind": "alert"})
    return out


def prompt_changes(store, lo: dt.datetime, hi: dt.datetime, service: str = "", feature: str = "") -> list[dict]:
    """Prompt versions first served in [lo, hi), to the minute, per service and feature, oldest first.

    "First" is over all the rollups hold (retention), so a version is new once. The
    hour rollup finds the candidates in a few rows; the minute rollup pins each one's minute.
    """
    where, params = "", {"lo": utc(lo).replace(tzinfo=None), "hi": utc(hi).replace(tzinfo=None)}
    for name, value in (("service", service), ("feature", feature)):
        if value:
            where += f" AND {name} = {{{name}:String}}"
            params[name] = value
    candidates = store.query(
        "SELECT service, feature, prompt_version, min(minute) AS first_hour FROM requests_1h WHERE 1" + where +
        " GROUP BY service, feature, prompt_version HAVING first_hour >= toStartOfHour({lo:DateTime}) "
        "AND first_hour < {hi:DateTime} ORDER BY first_hour", params)
    if not candidates:
        return []
    conds, exact = [], {}
    for i, (svc, feat, version, hour) in enumerate(candidates):
        conds.append(f"(service = {{s{i}:String}} AND feature = {{f{i}:String}} AND prompt_version = {{p{i}:String}} "
                     f"AND minute >= {{h{i}:DateTime}} AND minute < {{h{i}:DateTime}} + INTERVAL 1 HOUR)")
        exact.update({f"s{i}": svc, f"f{i}": feat, f"p{i}": version, f"h{i}": hour})
    firsts = {(s, f, v): m for s, f, v, m in store.query(
        "SELECT service, feature, prompt_version, min(minute) FROM requests_1m WHERE " + " OR ".join(conds) +
        " GROUP BY service, feature, prompt_version", exact)}
    out = []
    for svc, feat, version, hour in candidates:
        first = utc(firsts.get((svc, feat, version)) or hour)
        if utc(lo) <= first < utc(hi):
            out.append({"service": svc, "feature": feat, "prompt_version": version, "first_seen": first})
    return sorted(out, key=lambda c: c["first_seen"])


def prompt_markers(changes: list[dict]) -> list[dict]:
    return [{"x": iso_utc(c["first_seen"]), "label": f"prompt {c['prompt_version']}", "kind": "prompt"}
            for c in changes]
