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
    svc = current_app.extensions["nlpmon"]
    store = svc.store
    if store.ping():
        body = {"status": "ready", "store": store.describe()}
        snapshot = svc.progress.snapshot()
        if snapshot["steps"]:  # background work (serve --demo): what is left, for scripts that wait on it
            body["background"] = {"active": snapshot["active"], "done": snapshot["done"], "steps": snapshot["steps"],
                                  "left": [s["name"] for s in snapshot["left"]],
                                  "failed": [s["name"] for s in snapshot["failed"]]}
        return jsonify(body)
    resp = jsonify({"status": "unavailable", "store": store.describe()})
    resp.status_code = 503
    resp.headers["Retry-After"] = "5"
    return resp
