"""Alert endpoints: scope ``read`` to look, ``admin`` to change.

GET /v1/alerts, GET /v1/alerts/history, GET/POST /v1/silences, DELETE /v1/silences/<id>.
"""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, g, jsonify, request

from monitor.auth import require
from monitor.clock import iso_utc
from monitor.config import parse_duration
from monitor.errors import ApiError
from monitor.events import parse_timestamp
from monitor.params import time_arg

from . import silences

bp = Blueprint("alerts", __name__)
MAX_HISTORY = 5000


def _svc():
    return current_app.extensions["nlpmon"]


def _iso(v):
    return iso_utc(v) if isinstance(v, dt.datetime) else v


@bp.get("/v1/alerts")
@require("read")
def list_alerts():
    rows = _svc().store.query_dicts(
        "SELECT fingerprint, rule, labels, annotations, state, health, value, active_at, fired_at FROM alert_state FINAL "
        "WHERE state != 'inactive' ORDER BY state, fired_at")
    return jsonify({"alerts": [{
        "fingerprint": r["fingerprint"], "rule": r["rule"], "labels": r["labels"], "annotations": r["annotations"],
        "state": r["state"], "health": r["health"], "value": r["value"],
        "since": _iso(r["fired_at"] if r["state"] == "firing" else r["active_at"])} for r in rows]})


@bp.get("/v1/alerts/history")
@require("read")
def history():
    now = _svc().clock.now()
    to = time_arg("to", now)
    frm = time_arg("from", to - dt.timedelta(days=1))
    if frm > to:
        raise ApiError(400, "bad_request", "from: must not be after to")
    params = {"lo": frm, "hi": to, "limit": MAX_HISTORY}
    extra = ""
    if request.args.get("fingerprint"):
        extra = "AND fingerprint = {fp:String}"
        params["fp"] = request.args["fingerprint"]
    rows = _svc().store.query_dicts(
        "SELECT ts, fingerprint, rule, labels, from_state, to_state, value, reason, silenced FROM alert_history "
        "WHERE ts >= {lo:DateTime64(3, 'UTC')} AND ts < {hi:DateTime64(3, 'UTC')} " + extra +
        " ORDER BY ts, fingerprint LIMIT {limit:UInt32}", params)
    return jsonify({"history": [{**r, "ts": _iso(r["ts"]), "from": r.pop("from_state"), "to": r.pop("to_state")}
                                for r in rows]})


def _silence_json(s: dict) -> dict:
    return {**s, "startsAt": _iso(s["startsAt"]), "endsAt": _iso(s["endsAt"])}


@bp.get("/v1/silences")
@require("read")
def list_silences():
    svc = _svc()
    return jsonify({"silences": [_silence_json(s) for s in silences.list_all(svc.store, svc.clock)]})


@bp.post("/v1/silences")
@require("admin")
def add_silence():
    svc = _svc()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body: must be a JSON object with matchers, endsAt or duration, comment")
    matchers = body.get("matchers")
    if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
        raise ApiError(400, "bad_request", 'matchers: must be a list of strings such as "service=support-bot"')
    now = svc.clock.now()
    try:
        starts = parse_timestamp(body["startsAt"]) if body.get("startsAt") else now
        if body.get("endsAt"):
            ends = parse_timestamp(body["endsAt"])
        elif body.get("duration"):
            ends = starts + parse_duration(body["duration"])
        else:
            raise ApiError(400, "bad_request", "endsAt: give endsAt or duration")
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"endsAt: {exc}") from None
    try:
        s = silences.create(svc.store, svc.clock, matchers, ends, body.get("createdBy") or g.api_key.name,
                            str(body.get("comment", "")), starts)
    except silences.SilenceError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return jsonify(_silence_json(s)), 201


@bp.delete("/v1/silences/<sid>")
@require("admin")
def delete_silence(sid: str):
    svc = _svc()
    s = silences.expire(svc.store, svc.clock, sid)
    if s is None:
        raise ApiError(404, "not_found", f"no silence {sid!r}")
    return jsonify(_silence_json(s))
