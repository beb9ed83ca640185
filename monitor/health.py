"""Health checks: the only endpoints that need no API key."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """The store answers: a load balancer should send traffic here."""
    store = current_app.extensions["nlpmon"].store
    if store.ping():
        return jsonify({"status": "ready", "store": store.describe()})
    resp = jsonify({"status": "unavailable", "store": store.describe()})
    resp.status_code = 503
    resp.headers["Retry-After"] = "5"
    return resp
