"""The review queue as people work through it: the next item for a reviewer, a label stored, today's
progress. The API (monitor/review/api.py) and the /review page (dashboards) both call these, so a
reviewer gets the same item and the same checks whichever they use."""
from __future__ import annotations

import hashlib

from monitor.foundation.clock import iso_utc
from monitor.foundation.events import HALLUCINATION_LABELS
from monitor.foundation.http import ApiError
from monitor.foundation.tables import feedback, requests, review
from monitor.review import leases


def next_item(svc, reviewer: str, service: str | None = None, feature: str | None = None) -> dict | None:
    """Lease the next unlabeled item to ``reviewer`` (their own unexpired lease first); None when none is left."""
    leased = leases.lease_next(svc.store, reviewer, svc.clock.now(), svc.config.review.lease, service, feature,
                               by_proxy=svc.config.review.prioritize == "ungrounded_proxy")
    if leased is None:
        return None
    item, expires = leased
    t = requests.get(svc.store, item["request_id"])  # None once past retention: the item shows without texts
    return {
        "id": item["request_id"], "request_id": item["request_id"], "service": item["service"],
        "feature": item["feature"], "ts": item["request_ts"], "model": t.model if t else "",
        "prompt_version": t.prompt_version if t else "", "question": t.input_text if t else "",
        "context": t.context_text if t else "", "answer": t.output_text if t else "", "reviewer": reviewer,
        "lease_expires_at": expires,
        # Share of answer sentences with no close context sentence: a proxy to prioritise by, not a label.
        "ungrounded_proxy": item["ungrounded_proxy"]}


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
    leases.release(svc.store, request_id, reviewer, now)
    return feedback_id


def progress(svc, day, service: str | None = None, feature: str | None = None) -> review.ReviewProgress:
    """Today's sample: items queued for ``day`` and how many of them have a reviewer's label."""
    return review.progress(svc.store, day, service, feature)
