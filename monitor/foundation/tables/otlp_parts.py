"""``otlp_parts``: the span and the content log events of one model call, until they are ingested together.

kind ``span``: the request event the span maps to (JSON), state parked -> done; kind ``content``: texts
from a log event (JSON {"input_text"?, "output_text"?}), one row per event (``part``).
"""
from __future__ import annotations

import datetime as dt
import json


COLUMNS = ["trace_id", "span_id", "kind", "part", "payload", "state", "received_at", "updated_at"]


def write(store, rows: list[tuple[str, str, str, str, dict, str, dt.datetime]]) -> None:
    """(trace_id, span_id, kind, part, payload, state, received_at) rows, in one insert."""
    if rows:
        now = dt.datetime.now(dt.timezone.utc)
        store.insert("otlp_parts", [[t, s, k, p, json.dumps(payload, ensure_ascii=False), state, at, now]
                                    for t, s, k, p, payload, state, at in rows], COLUMNS)


def contents(store, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[dict]]:
    """(trace_id, span_id) -> the content payloads stored for it, oldest first."""
    if not keys:
        return {}
    out: dict[tuple[str, str], list[dict]] = {}
    for t, s, payload in store.query(
            "SELECT trace_id, span_id, payload FROM otlp_parts FINAL WHERE kind = 'content' "
            "AND (trace_id, span_id) IN {keys:Array(Tuple(String, String))} ORDER BY received_at",
            {"keys": keys}):
        out.setdefault((t, s), []).append(json.loads(payload))
    return out


def parked_before(store, limit: dt.datetime) -> list[tuple[str, str, dt.datetime, dict]]:
    """Parked spans received before ``limit``: (trace_id, span_id, received_at, request event)."""
    return [(t, s, at, json.loads(payload)) for t, s, at, payload in store.query(
        "SELECT trace_id, span_id, received_at, payload FROM otlp_parts FINAL WHERE kind = 'span' "
        "AND state = 'parked' AND received_at < {limit:DateTime64(3, 'UTC')} ORDER BY received_at",
        {"limit": limit})]


def parked_spans(store, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    return {(t, s) for t, s in store.query(
        "SELECT trace_id, span_id FROM otlp_parts FINAL WHERE kind = 'span' AND state = 'parked' "
        "AND (trace_id, span_id) IN {keys:Array(Tuple(String, String))}", {"keys": keys})}
