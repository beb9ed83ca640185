"""Alert endpoints: scope ``read`` to look, ``admin`` to change.

GET /v1/alerts, GET /v1/alerts/history, GET/POST /v1/silences, DELETE /v1/silences/<id>.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

from flask import Blueprint, current_app, g, jsonify, request

from monitor.foundation.auth import require
from monitor.foundation.clock import iso_utc, parse_time
from monitor.foundation.config import parse_duration
from monitor.foundation.http import ApiError, time_arg
from alerts import silence as silences
from monitor.foundation.tables import alert_history, alert_state

bp = Blueprint("alerts", __name__)
MAX_HISTORY = 5000


def _svc():
    return current_app.extensions["nlpmon"]


def _iso(v):
    return iso_utc(v) if isinstance(v, dt.datetime) else v


@bp.get("/v1/alerts")
@require("read")
def list_alerts():
    return jsonify({"alerts": [{
        "fingerprint": r.fingerprint, "rule": r.rule, "labels": r.labels, "annotations": r.annotations,
        "state": r.state, "health": r.health, "value": r.value, "since": _iso(r.since)}
        for r in alert_state.active(_svc().store)]})


@bp.get("/v1/alerts/history")
@require("read")
def history():
    now = _svc().clock.now()
    to = time_arg("to", now)
    frm = time_arg("from", to - dt.timedelta(days=1))
    if frm > to:
        raise ApiError(400, "bad_request", "from: must not be after to")
    rows = alert_history.between(_svc().store, frm, to, request.args.get("fingerprint"), MAX_HISTORY)
    return jsonify({"history": [{"ts": _iso(r.ts), "fingerprint": r.fingerprint, "rule": r.rule, "labels": r.labels,
                                 "from": r.from_state, "to": r.to_state, "value": r.value, "reason": r.reason,
                                 "silenced": r.silenced} for r in rows]})


@bp.get("/v1/silences")
@require("read")
def list_silences():
    svc = _svc()
    return jsonify({"silences": [s.as_json() for s in silences.list_all(svc.store, svc.clock)]})


SILENCE_FIELDS = {"matchers", "startsAt", "endsAt", "duration", "createdBy", "comment"}


@bp.post("/v1/silences")
@require("admin")
def add_silence():
    svc = _svc()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body: must be a JSON object with matchers, endsAt or duration, comment")
    unknown = sorted(set(body) - SILENCE_FIELDS)
    if unknown:
        raise ApiError(400, "bad_request", f"{unknown[0]}: unknown field (a silence has {', '.join(sorted(SILENCE_FIELDS))})")
    now = svc.clock.now()
    starts, ends = _silence_span(body, now)
    # Idempotency-Key: a client retrying a create (through another replica, after a timeout) gets the
    # silence the key created, as stored, and never a second one; the key is bound to the body it came
    # with (another body under it is 409, as Stripe answers). Without a key every POST is a new silence.
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 200:
        raise ApiError(400, "bad_request", "Idempotency-Key: at most 200 characters")
    sid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"nlpmon:silence/{g.api_key.key_id}/{key}")) if key else None
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() if key else ""
    created_by = body.get("createdBy") if body.get("createdBy") is not None else g.api_key.name
    try:
        s, replayed = silences.create(svc.store, svc.clock, body.get("matchers"), ends, created_by,
                                      body.get("comment", ""), starts, sid=sid, request_hash=digest)
    except silences.SilenceConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except silences.SilenceError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return jsonify(s.as_json()), 201, ({"Idempotent-Replayed": "true"} if replayed else {})


def _silence_span(body: dict, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(startsAt, endsAt) of a silence body: endsAt, or startsAt plus duration; ApiError naming the field."""
    field = "startsAt"
    try:
        starts = parse_time(body["startsAt"]) if body.get("startsAt") is not None else now
        if body.get("endsAt") is not None:
            field = "endsAt"
            return starts, parse_time(body["endsAt"])
        if body.get("duration") is None:
            raise ApiError(400, "bad_request", "endsAt: give endsAt or duration")
        field = "duration"
        return starts, silences.ends_after(starts, parse_duration(body["duration"]))
    except silences.SilenceError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    except (ValueError, OverflowError) as exc:
        raise ApiError(400, "bad_request", f"{field}: {exc}") from None


@bp.delete("/v1/silences/<sid>")
@require("admin")
def delete_silence(sid: str):
    svc = _svc()
    s = silences.expire(svc.store, svc.clock, sid)
    if s is None:
        raise ApiError(404, "not_found", f"no silence {sid!r}")
    return jsonify(s.as_json())
