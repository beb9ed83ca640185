"""OTLP messages in and out: bodies in ``application/x-protobuf`` (OTLP/HTTP and OTLP/gRPC) and
``application/json`` (OTLP/HTTP's JSON mapping, with hex trace and span ids), parsed by opentelemetry-proto,
never by hand; the limits an export is held to; the answers."""
from __future__ import annotations

import base64

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from monitor.foundation.http import ApiError
from monitor.ingest import bodies

PROTOBUF, JSON = "application/x-protobuf", "application/json"
_ID_KEYS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def encoding_of(mimetype: str) -> str:
    mimetype = (mimetype or "").lower()
    if mimetype not in (PROTOBUF, JSON):
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {mimetype or 'missing'}; OTLP/HTTP takes {PROTOBUF} or {JSON}")
    return mimetype


def _hex_ids_to_base64(node):
    """OTLP's JSON writes ids as hex, protobuf's JSON mapping wants bytes as base64."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in _ID_KEYS and isinstance(v, str):
                try:
                    v = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError:
                    raise ApiError(400, "bad_request", f"{k}: {v[:40]!r} is not a hex id") from None
            out[k] = _hex_ids_to_base64(v)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


# Deeper than protobuf's own limit of 100 nested messages can be in JSON (a message and its repeated field are
# two levels), so nothing valid is refused; it bounds the walks of the parsed body, which recurse.
MAX_JSON_DEPTH = 256


def _json(body: bytes) -> dict:
    too_deep = ApiError(400, "bad_request", f"body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = orjson.loads(body)  # lone surrogates and nesting past 1,024 levels are errors here, not crashes
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise too_deep from None
        raise ApiError(400, "bad_request", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object (an OTLP export request)")
    if bodies.too_deep(data, MAX_JSON_DEPTH):
        raise too_deep
    return _hex_ids_to_base64(data)


def parse(message, body: bytes, encoding: str):
    """``body`` decoded into a new ``message`` (an Export*ServiceRequest class)."""
    out = message()
    what = "protobuf" if encoding == PROTOBUF else "OTLP JSON"
    try:
        if encoding == PROTOBUF:
            out.ParseFromString(body)
        else:
            json_format.ParseDict(_json(body), out, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError) as exc:
        raise ApiError(400, "bad_request", f"body is not a valid {message.__name__} in {what}: {exc}") from None
    return out


def _check_count(count: int, limit: int, what: str, exporter_setting: str) -> None:
    """An export holds at most ingest.max_rows_per_batch records, as a /v1/requests batch holds rows: 413
    (RESOURCE_EXHAUSTED over gRPC) otherwise, naming the sender's setting that makes its batches smaller."""
    if count > limit:
        raise ApiError(413, "payload_too_large",
                       f"{count} {what} in one export; the limit is ingest.max_rows_per_batch ({limit}): send "
                       f"smaller batches (the SDK's {exporter_setting}, the Collector's send_batch_max_size)")


def record_json(message) -> dict:
    """A span or log record as OTLP JSON (hex ids), as rejected_events keeps it."""
    out = json_format.MessageToDict(message)
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in out:
            out[key] = base64.b64decode(out[key]).hex()
    return out


def error_message(errors: list[dict], labels: list[str], most: int = 5) -> str:
    """partial_success.error_message: the first problems, each naming its record (``labels`` by the index
    in the rows the errors came from), the field and the reason."""
    said = "; ".join(f"{labels[e['index']]}: {e['field']}: {e['reason']}" for e in errors[:most])
    more = len(errors) - most
    return said + (f"; and {more} more (GET /v1/rejected lists them)" if more > 0 else "")


def parse_traces(body: bytes, encoding: str) -> ExportTraceServiceRequest:
    return parse(ExportTraceServiceRequest, body, encoding)


def check_spans(export: ExportTraceServiceRequest, max_spans: int) -> None:
    _check_count(sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans), max_spans, "spans",
                 "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")


def traces_answer(rejected: int, message: str) -> ExportTraceServiceResponse:
    """The ExportTraceServiceResponse of an export; partial_success is set only when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
    return response


def parse_logs(body: bytes, encoding: str) -> ExportLogsServiceRequest:
    return parse(ExportLogsServiceRequest, body, encoding)


def check_log_records(export: ExportLogsServiceRequest, max_records: int) -> None:
    _check_count(sum(len(s.log_records) for r in export.resource_logs for s in r.scope_logs), max_records,
                 "log records", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE")


def logs_answer(rejected: int, message: str) -> ExportLogsServiceResponse:
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(ExportLogsPartialSuccess(rejected_log_records=rejected,
                                                                   error_message=message))
    return response


def encoded(response, encoding: str) -> bytes:
    """An answer as OTLP/HTTP sends it: in the request's encoding."""
    if encoding == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()
