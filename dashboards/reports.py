"""Drift reports: the list (GET /v1/reports), one report's numbers and explanation
(GET /v1/reports/<id>) and its Evidently HTML (GET /reports/<id>), all scope ``read``.

The HTML is Evidently's own page (``get_html_str(as_iframe=False)``) with a
header of ours in front: the decision per text side and method, and the texts
that explain the drift. Those texts are users' words, so they are escaped.
"""
from __future__ import annotations

from dataclasses import asdict
from html import escape

from flask import Blueprint, Response, current_app, jsonify, request

from monitor.foundation.auth import require
from monitor.foundation.clock import iso_utc
from monitor.foundation.http import ApiError, time_arg
from monitor.foundation.tables import drift_reports
from monitor.foundation.tables.drift_reports import DriftReport

bp = Blueprint("reports", __name__)
MAX_LIMIT = 1000


def _services():
    return current_app.extensions["nlpmon"]


def _row(r: DriftReport) -> dict:
    return {"id": r.report_id, "ts": iso_utc(r.ts), "window": r.window, "service": r.service,
            "feature": r.feature, "status": r.status, "drift_detected": r.drift_detected,
            "reference": {"from": iso_utc(r.reference_from), "to": iso_utc(r.reference_to)},
            "summary": r.summary.as_dict() if r.summary else {}, "html_url": f"/reports/{r.report_id}"}


@bp.get("/v1/reports")
@require("read")
def list_reports():
    equal = {name: request.args[name] for name in ("service", "feature", "window", "status") if request.args.get(name)}
    detected = request.args.get("detected")
    if detected is not None and detected not in ("true", "false"):
        raise ApiError(400, "bad_request", "detected: must be true or false")
    lo, hi = time_arg("from"), time_arg("to")
    try:
        limit = int(request.args.get("limit", 100))
    except ValueError:
        raise ApiError(400, "bad_request", "limit: must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit: must be between 1 and {MAX_LIMIT}")
    rows = drift_reports.search(_services().store, equal, None if detected is None else detected == "true", lo, hi,
                                limit)
    return jsonify({"reports": [_row(r) for r in rows]})


def _one(report_id: str, snapshot: bool = False) -> DriftReport:
    found = drift_reports.get(_services().store, report_id, explanation=True, snapshot=snapshot)
    if found is None:
        raise ApiError(404, "not_found", f"no drift report {report_id!r}")
    return found


@bp.get("/v1/reports/<report_id>")
@require("read")
def get_report(report_id: str):
    r = _one(report_id)
    return jsonify({**_row(r), "explanation": {side: asdict(e) for side, e in r.explanation.items()}})


@bp.get("/reports/<report_id>")
@require("read")
def report_html(report_id: str):
    r = _one(report_id, snapshot=True)
    if not r.snapshot:
        why = r.summary.report_error if r.summary else None
        if why:
            raise ApiError(404, "no_snapshot", f"report {report_id}: the Evidently report could not be drawn ({why}); "
                                               "the drift decision and scores are in GET /v1/reports/<id>")
        raise ApiError(404, "no_snapshot", f"report {report_id} has status {r.status}: there is no Evidently "
                                           "snapshot (see GET /v1/reports/<id> for the sample sizes)")
    from evidently.core.report import Snapshot
    html = Snapshot.loads(r.snapshot).get_html_str(as_iframe=False)
    header = _header(r)
    body = html.find("<body")
    if body >= 0:
        at = html.index(">", body) + 1
        html = html[:at] + header + html[at:]
    else:
        html = header + html
    return Response(html, mimetype="text/html", headers={"Content-Security-Policy": "frame-ancestors 'self'"})


def _header(r: DriftReport) -> str:
    e = escape
    summary = r.summary
    parts = [f"<section id='nlpmon-drift' style='font-family:sans-serif;padding:1em;border-bottom:1px solid #ccc'>"
             f"<h1>Drift {e(r.service)}/{e(r.feature)}, {e(r.window)} ending {e(iso_utc(r.ts))}</h1>"
             f"<p>Reference {e(iso_utc(r.reference_from))} to {e(iso_utc(r.reference_to))}; sample sizes: "
             f"{e(', '.join(f'{k} {v}' for k, v in summary.samples.items()))}. "
             f"{'<strong>Drift detected.</strong>' if r.drift_detected else 'No drift detected.'}</p>"]
    for side, result in summary.sides.items():
        cells = "".join(
            f"<tr><td>{e(m)}</td>" + (f"<td>{s.score:.4f}</td><td>{'yes' if s.detected else 'no'}</td>"
                                      if s.error is None else f"<td>–</td><td>could not run: {e(s.error)}</td>") + "</tr>"
            for m, s in result.methods.items())
        if result.decided:
            verdict = "drift" if result.detected else "no drift"
            if result.methods_run < len(result.methods):
                verdict += f" ({result.methods_run} of {len(result.methods)} methods could run)"
            parts.append(f"<h2>{e(side)} texts: {e(verdict)}</h2>")
        else:
            parts.append(f"<h2>{e(side)} texts: not decided</h2><p>{e(result.reason or '')}</p>")
        if cells:
            parts.append(f"<table><tr><th>method</th><th>score</th><th>drift</th></tr>{cells}</table>")
        ex = r.explanation.get(side)
        ex_error = summary.explanation_error.get(side)
        if ex_error:
            parts.append(f"<p>The texts that explain the drift could not be found: {e(ex_error)}</p>")
        if ex:
            far = "".join(f"<li>{e(x.text)} <small>(distance {x.distance})</small></li>" for x in ex.farthest)
            parts.append(f"<h3>Texts farthest from the reference ({ex.novel_share:.0%} of the current sample is "
                         f"new)</h3><ol>{far}</ol>")
            for c in ex.clusters:
                items = "".join(f"<li>{e(t)}</li>" for t in c.examples)
                parts.append(f"<h3>New cluster: {c.size} texts ({c.share:.1%})</h3><ul>{items}</ul>")
    if summary.report_omitted:
        items = "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in summary.report_omitted.items())
        parts.append(f"<h3>Left out of the Evidently report below</h3><ul>{items}</ul>")
    parts.append("</section>")
    return "".join(parts)
