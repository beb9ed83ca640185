"""The review API: reviewers fetch sampled responses one at a time and label them.

``GET /v1/review/next`` leases the next unlabeled item to the reviewer for
``review.lease`` (10 minutes by default) so two reviewers are not given the
same item; ``POST /v1/review/<request_id>`` stores the label as a feedback
event (kind ``hallucination``, source ``reviewer``) through the ingest
pipeline. Another reviewer's label on an already labeled item is kept, so
agreement can be measured; the same reviewer labeling twice is refused.
"""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from monitor.foundation.auth import require
from monitor.foundation.clock import iso_utc
from monitor.foundation.events import HALLUCINATION_LABELS, MAX_ID
from monitor.foundation.http import ApiError
from monitor.review import queue

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
    item = queue.next_item(_services(), _reviewer(request.args.get("reviewer")), request.args.get("service"),
                      request.args.get("feature"))
    if item is None:
        return jsonify({"item": None, "message": "nothing left to review for this filter"})
    return jsonify({"item": {**item, "ts": iso_utc(item["ts"]), "lease_expires_at": iso_utc(item["lease_expires_at"])}})


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
    feedback_id = queue.store_label(svc, request_id, label, reviewer, comment, g.api_key.key_id)
    resp = jsonify({"stored": True, "feedback_id": feedback_id, "request_id": request_id, "label": label,
                    "reviewer": reviewer})
    resp.status_code = 201
    return resp


