"""The review API: reviewers fetch sampled responses one at a time and label them.

``GET /v1/review/next`` leases the next unlabeled item to the reviewer for
``review.lease`` (10 minutes by default) so two reviewers are not given the
same item; ``POST /v1/review/<request_id>`` stores the label as a feedback
event (kind ``hallucination``, source ``reviewer``) through the ingest
pipeline. Another reviewer's label on an already labeled item is kept, so
agreement can be measured; the same reviewer labeling twice is refused.
"""
from __future__ import annotations

import hashlib

from flask import Blueprint, current_app, g, jsonify, request

from monitor.foundation.auth import require
from monitor.foundation.clock import iso_utc
from monitor.foundation.events import HALLUCINATION_LABELS, MAX_ID
from monitor.foundation.http import ApiError
from monitor.foundation.tables import feedback, requests, review

bp = Blueprint("review", __name__, url_prefix="/v1/review")


def _services():
    return current_app.extensions["nlpmon"]


def _reviewer(value) -> str:
    reviewer = value if value is not None else g.api_key.name
    if not isinstance(reviewer, str) or not reviewer.strip() or len(reviewer) > MAX_ID:
        raise ApiError(400, "bad_request", f"reviewer: must be a non-empty string of at most {MAX_ID} characters")
    return reviewer.strip()


@bp.get("/next")
@require("review")
def next_item():
    item = lease_next(_services(), _reviewer(request.args.get("reviewer")), request.args.get("service"),
                      request.args.get("feature"))
    if item is None:
        return jsonify({"item": None, "message": "nothing left to review for this filter"})
    return jsonify({"item": {**item, "ts": iso_utc(item["ts"]), "lease_expires_at": iso_utc(item["lease_expires_at"])}})


def lease_next(svc, reviewer: str, service: str | None = None, feature: str | None = None) -> dict | None:
    """Lease the next unlabeled item to ``reviewer`` (their own unexpired lease first); None when none is left."""
    leased = review.lease_next(svc.store, reviewer, svc.clock.now(), svc.config.review.lease, service, feature,
                               by_proxy=svc.config.review.prioritize == "ungrounded_proxy")
    if leased is None:
        return None
    item, expires = leased
    t = requests.get(svc.store, item["request_id"]) or {"input_text": "", "context_text": "", "output_text": "",
                                                       "model": "", "prompt_version": ""}
    return {
        "id": item["request_id"], "request_id": item["request_id"], "service": item["service"],
        "feature": item["feature"], "ts": item["request_ts"], "model": t["model"],
        "prompt_version": t["prompt_version"], "question": t["input_text"], "context": t["context_text"],
        "answer": t["output_text"], "reviewer": reviewer, "lease_expires_at": expires,
        # Share of answer sentences with no close context sentence: a proxy to prioritise by, not a label.
        "ungrounded_proxy": item["ungrounded_proxy"]}


@bp.post("/<request_id>")
@require("review")
def label_item(request_id: str):
    svc = _services()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body: must be a JSON object with label, reviewer and comment")
    label = body.get("label")
    if label not in HALLUCINATION_LABELS:
        raise ApiError(400, "bad_request", f"label: must be one of {', '.join(HALLUCINATION_LABELS)}")
    reviewer = _reviewer(body.get("reviewer"))
    comment = body.get("comment", "")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise ApiError(400, "bad_request", "comment: must be a string")
    unknown = set(body) - {"label", "reviewer", "comment"}
    if unknown:
        raise ApiError(400, "bad_request", f"{sorted(unknown)[0]}: unknown field")
    feedback_id = store_label(svc, request_id, label, reviewer, comment, g.api_key.key_id)
    resp = jsonify({"stored": True, "feedback_id": feedback_id, "request_id": request_id, "label": label,
                    "reviewer": reviewer})
    resp.status_code = 201
    return resp


def store_label(svc, request_id: str, label: str, reviewer: str, comment: str, api_key_id: str) -> str:
    """Store a reviewer's label as feedback and release the lease; ApiError 404/409/400 when it cannot be."""
    if label not in HALLUCINATION_LABELS:
        raise ApiError(400, "bad_request", f"label: must be one of {', '.join(HALLUCINATION_LABELS)}")
    if not review.is_queued(svc.store, request_id):
        raise ApiError(404, "not_found", f"request {request_id!r} is not in the review queue")
    feedback_id = hashlib.sha256(f"review|{request_id}|{reviewer}".encode()).hexdigest()[:32]
    if feedback.exists(svc.store, feedback_id, request_id):
        raise ApiError(409, "conflict", f"{reviewer} has already labeled {request_id}")
    now = svc.clock.now()
    result = svc.ingestor.ingest("feedback", [{
        "feedback_id": feedback_id, "request_id": request_id, "ts": iso_utc(now), "kind": "hallucination",
        "label": label, "source": "reviewer", "reviewer": reviewer, "comment": comment}],
        api_key_id=api_key_id)
    if result.rejected:
        e = result.errors[0]
        raise ApiError(400, "bad_request", f"{e['field']}: {e['reason']}")
    review.release(svc.store, request_id, reviewer, now)
    return feedback_id


def progress(svc, day, service: str | None = None, feature: str | None = None) -> dict:
    """Today's sample: items queued for ``day`` and how many of them have a reviewer's label."""
    return review.progress(svc.store, day, service, feature)
