"""OTLP/HTTP bodies in and out: ``application/x-protobuf`` and ``application/json`` (OTLP's JSON mapping, with
hex trace and span ids), parsed by opentelemetry-proto, never by hand."""
from __future__ import annotations

import base64
import json

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
                    raise ApiError(400, "bad_request", f"{k}: {v!r} is not a hex id") from None
            out[k] = _hex_ids_to_base64(v)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def parse(message, body: bytes, encoding: str):
    """``body`` decoded into a new ``message`` (an Export*ServiceRequest class)."""
    out = message()
    try:
        if encoding == PROTOBUF:
            out.ParseFromString(body)
        else:
            json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), out, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, ValueError, UnicodeDecodeError) as exc:
        what = "protobuf" if encoding == PROTOBUF else "OTLP JSON"
        raise ApiError(400, "bad_request", f"body is not a valid {message.__name__} in {what}: {exc}") from None
    return out


def parse_traces(body: bytes, encoding: str) -> ExportTraceServiceRequest:
    return parse(ExportTraceServiceRequest, body, encoding)


def traces_response(rejected: int, message: str, encoding: str) -> bytes:
    """The ExportTraceServiceResponse OTLP/HTTP answers 200 with, in the request's encoding; partial_success
    is set only when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
    if encoding == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()


def parse_logs(body: bytes, encoding: str) -> ExportLogsServiceRequest:
    return parse(ExportLogsServiceRequest, body, encoding)


def logs_response(rejected: int, message: str, encoding: str) -> bytes:
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(ExportLogsPartialSuccess(rejected_log_records=rejected,
                                                                   error_message=message))
    if encoding == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()
