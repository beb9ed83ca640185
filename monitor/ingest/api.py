"""The v1 HTTP API: ingest endpoints and lookups of what was stored."""
from __future__ import annotations

import datetime as dt
import zlib

from flask import Blueprint, current_app, g, jsonify, request

from monitor.foundation.auth import require
from monitor.foundation.clock import iso_utc, parse_time
from monitor.foundation.http import ApiError
from monitor.foundation.tables import feedback, rejected, releases, requests
from monitor.ingest import bodies, otlp, otlp_export

bp = Blueprint("api_v1", __name__, url_prefix="/v1")

JSON_TYPES = {"application/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}


def _services():
    return current_app.extensions["nlpmon"]


def _read_body(limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"body is {request.content_length} bytes; the limit is {limit}")
    body = request.get_data(cache=False)
    if len(body) > limit:
        raise ApiError(413, "payload_too_large", f"body is over the limit of {limit} bytes")
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding == "gzip":
        return _gunzip(body, limit)
    if encoding != "identity":
        raise ApiError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip")
    return body


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every member of a gzip stream (a decompressor stops at the end of the first), within ``limit`` bytes
    in all; trailing zero bytes are padding, as the gzip module reads them."""
    out: list[bytes] = []
    size = 0
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(body, limit - size + 1)
        except zlib.error:
            raise ApiError(400, "bad_request", "body is not valid gzip") from None
        size += len(chunk)
        if size > limit or d.unconsumed_tail:
            raise ApiError(413, "payload_too_large", f"decompressed body is over the limit of {limit} bytes")
        if not d.eof:
            raise ApiError(400, "bad_request", "gzip body is truncated: the stream ends inside a member")
        out.append(chunk)
        body = d.unused_data.lstrip(b"\0")
        if not body:
            return b"".join(out)


def parse_batch(max_bytes: int, max_rows: int) -> list:
    """A JSON array (or one object) or NDJSON, as a list of rows."""
    ctype = (request.mimetype or "").lower()
    if ctype not in JSON_TYPES | NDJSON_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {ctype or 'missing'!s}; use application/json or application/x-ndjson")
    raw = _read_body(max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "body is not valid UTF-8") from None
    if ctype in JSON_TYPES:
        try:
            data, deep = bodies.loads(text), False
        except ValueError as exc:
            raise ApiError(400, "bad_request", f"body is not valid JSON: {exc}") from None
        except bodies.TooDeep:
            data, deep = None, True
        if deep or bodies.too_deep(data, bodies.MAX_DEPTH + (1 if isinstance(data, list) else 0)):
            # A row nests too deeply (for the parsers, or past the limit): rows are parsed one by one,
            # so that row alone is rejected.
            try:
                rows = bodies.rows_one_by_one(raw, max_rows)
            except bodies.TooManyRows as exc:
                raise ApiError(413, "payload_too_large", str(exc)) from None
            except ValueError as exc:
                raise ApiError(400, "bad_request", f"body is not valid JSON: {exc}") from None
        else:
            rows = data if isinstance(data, list) else [data]
    else:
        rows = [bodies.parse_row(line) for line in text.splitlines() if line.strip()]
    if not rows:
        raise ApiError(400, "bad_request", "body holds no events")
    if len(rows) > max_rows:
        raise ApiError(413, "payload_too_large", f"{len(rows)} events in one batch; the limit is {max_rows}")
    return rows


def _ingest(kind: str):
    svc = _services()
    cfg = svc.config.ingest
    rows = parse_batch(cfg.max_body_bytes, cfg.max_rows_per_batch)
    result = svc.ingestor.ingest(kind, rows, api_key_id=g.api_key.key_id)
    return jsonify(result.as_dict()), (200 if result.rejected == 0 else 207)


@bp.post("/requests")
@require("ingest")
def post_requests():
    return _ingest("requests")


@bp.post("/feedback")
@require("ingest")
def post_feedback():
    return _ingest("feedback")


_RELEASE_TEXT = {"service": 256, "feature": 256, "dimension": 64, "value": 256, "previous_value": 256,
                 "description": 2000, "link": 2000}


@bp.post("/releases")
@require("ingest")
def post_release():
    """Declare a release (a deploy marker from CI): service, feature, dimension, value (the new one), and
    optionally previous_value, ts (default now), description and link. The ``releases`` job judges it once
    its value takes traffic; a release it already found for the same change takes the declared details."""
    svc = _services()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body: must be a JSON object")
    for name, limit in _RELEASE_TEXT.items():
        value = body.get(name, "")
        if not isinstance(value, str):
            raise ApiError(400, "bad_request", f"{name}: must be a string")
        if len(value) > limit:
            raise ApiError(400, "bad_request", f"{name}: at most {limit} characters")
    for name in ("service", "feature", "dimension", "value"):
        if not body.get(name, "").strip():
            raise ApiError(400, "bad_request", f"{name}: required")
    if body["dimension"] not in svc.config.releases.dimensions:
        raise ApiError(400, "bad_request", f"dimension: {body['dimension']!r} is not a release dimension "
                                           f"(releases.dimensions: {', '.join(svc.config.releases.dimensions)})")
    link = body.get("link", "")
    if link and not link.startswith(("https://", "http://")):
        raise ApiError(400, "bad_request", "link: must be an http(s) URL")
    try:
        ts = parse_time(body["ts"], epoch_strings=False) if body.get("ts") is not None else svc.clock.now()
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"ts: {exc}") from None
    key = (body["service"], body["feature"], body["dimension"])
    found = [r for r in releases.search(svc.store, service=key[0], feature=key[1], dimension=key[2],
                                        lo=ts - releases.DECLARED_MATCH, hi=ts + releases.DECLARED_MATCH)
             if r.value == body["value"]]
    details = {"source": "declared", "description": body.get("description", ""), "link": link}
    if found:  # found in the traffic already: the same release, now with its declared details
        row = found[0].with_(**details, previous_value=found[0].previous_value or body.get("previous_value", ""))
        status = 200
    else:
        row = releases.Release(releases.release_id(*key, body["value"], ts), *key, body["value"],
                               body.get("previous_value", ""), ts, reason="declared; its value has not taken traffic yet",
                               **details)
        status = 201
    releases.write(svc.store, [row], svc.clock.now())
    return jsonify({"release_id": row.release_id, "ts": iso_utc(row.ts), "source": row.source,
                    "verdict": row.verdict}), status


def _otlp(parse, export, answer):
    """An OTLP/HTTP export: parsed in the encoding its Content-Type names, ingested as every OTLP export is
    (otlp_export), answered 200 in the same encoding with what was refused (partial_success)."""
    svc = _services()
    encoding = otlp.encoding_of(request.mimetype)
    message = parse(_read_body(svc.config.ingest.max_body_bytes), encoding)
    rejected, said = export(svc, message, g.api_key.key_id)
    return otlp.encoded(answer(rejected, said), encoding), 200, {"Content-Type": encoding}


@bp.post("/traces")
@require("ingest")
def post_traces():
    """OTLP/HTTP traces: GenAI model-call spans become requests (otlp_export.export_traces)."""
    return _otlp(otlp.parse_traces, otlp_export.export_traces, otlp.traces_answer)


@bp.post("/logs")
@require("ingest")
def post_logs():
    """OTLP/HTTP logs: content events join their span's request, evaluations become feedback
    (otlp_export.export_logs)."""
    return _otlp(otlp.parse_logs, otlp_export.export_logs, otlp.logs_answer)


@bp.get("/requests/<request_id>")
@require("read")
def get_request(request_id: str):
    store = _services().store
    row = requests.get(store, request_id)
    if row is None:
        raise ApiError(404, "not_found", f"no request with request_id {request_id!r}")
    return jsonify({"request": _jsonable(row.as_dict()),
                    "feedback": [_jsonable(vars(f)) for f in feedback.for_request(store, request_id)]})


@bp.get("/rejected")
@require("read")
def list_rejected():
    kind = request.args.get("kind")
    if kind not in (None, "requests", "feedback"):
        raise ApiError(400, "bad_request", "kind: must be requests or feedback")
    try:
        limit = min(max(int(request.args.get("limit", 100)), 1), 1000)
    except ValueError:
        raise ApiError(400, "bad_request", "limit: must be an integer") from None
    return jsonify({"rejected": [_jsonable(vars(r)) for r in rejected.recent(_services().store, kind, limit)]})


def _jsonable(row: dict) -> dict:
    return {k: iso_utc(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}
