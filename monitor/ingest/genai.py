"""OpenTelemetry GenAI spans as nlpmon request events (the semantic conventions, current and pre-1.37 names).

A span is a model call when it says so: ``gen_ai.operation.name`` is one of
MODEL_OPERATIONS, or it carries ``gen_ai.request.model``. Everything else (HTTP
handlers, DB calls, agent and tool spans without a model) is not a request and
:func:`request_event` returns None for it. The event it builds is an ordinary
``/v1/requests`` row, so validation, redaction, pricing, deduplication and the
rollups are the ingest pipeline's, as for events sent by the client.

Texts: of ``gen_ai.input.messages`` the last user message is kept as
``input_text`` (its text parts, joined by blank lines; a multi-turn history
keeps only its newest question, the one the answer is for); of
``gen_ai.output.messages`` the first choice's text parts are ``output_text``.
System instructions and tool calls are not kept. The pre-1.37 flattened
attributes (``gen_ai.prompt.N.role/content``, ``gen_ai.completion.N.content``)
are read the same way.
"""
from __future__ import annotations

import datetime as dt
import math
from functools import partial
from typing import Any

import orjson

from monitor.foundation.events import FieldError
from monitor.ingest import otlp
from monitor.ingest.pipeline import Mapped

MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
STATUS_CODE_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
ID_BYTES = {"trace_id": 16, "span_id": 8}


def value(any_value) -> Any:
    """An OTLP AnyValue as a Python value (arrays as lists, key-value lists as dicts)."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


def attributes(key_values) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in key_values}


def request_id(trace_id: bytes, span_id: bytes) -> str:
    """Stable across an exporter's retries: the same span is the same request."""
    return f"otel-{trace_id.hex()}-{span_id.hex()}"


def id_errors(trace_id: bytes, span_id: bytes) -> list[FieldError]:
    """What is wrong with a record's ids: a request id is made of them, so only real ones will do (all zero
    means "no span" in OTLP, and every such span would be one request)."""
    errors = []
    for name, got in (("trace_id", trace_id), ("span_id", span_id)):
        if len(got) != ID_BYTES[name]:
            errors.append(FieldError(name, f"must be {ID_BYTES[name]} bytes, got {len(got)}"))
        elif not any(got):
            errors.append(FieldError(name, "all zero"))
    return errors


def is_model_call(attrs: dict[str, Any]) -> bool:
    operation = attrs.get("gen_ai.operation.name")
    return (isinstance(operation, str) and operation in MODEL_OPERATIONS) or bool(attrs.get("gen_ai.request.model"))


def _iso(unix_nano: int) -> str:
    return dt.datetime.fromtimestamp(unix_nano / 1e9, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _first(attrs: dict[str, Any], *names: str) -> Any:
    return _pick(attrs, names)[1]


def _pick(attrs: dict[str, Any], names) -> tuple[str | None, Any]:
    """(name, value) of the first of ``names`` present (not empty) in ``attrs``; (None, None) without one."""
    for name in names:
        v = attrs.get(name)
        if v not in (None, ""):
            return name, v
    return None, None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar_text(v: Any) -> Any:
    """A dimension's value: a scalar as its text; an array or map as it is, for validation to refuse."""
    return str(v) if isinstance(v, (str, int, float, bool)) else v


# request field -> (the span's or the resource's attributes, the names it is read from, first present wins)
_COPIED = {
    "service": ("resource", ("service.name",)),
    "environment": ("resource", ("deployment.environment.name", "deployment.environment")),
    "model": ("span", ("gen_ai.response.model", "gen_ai.request.model")),
    "provider": ("span", ("gen_ai.provider.name", "gen_ai.system")),
    "session_id": ("span", ("gen_ai.conversation.id",)),
    "user_id": ("span", ("user.id", "enduser.id")),
    # Counts are passed on as sent: the event contract's checks refuse what is not a count (negative, text,
    # NaN, a boolean, more than events.MAX_TOKENS), in the attribute's name.
    "input_tokens": ("span", ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
    "output_tokens": ("span", ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")),
    "cached_input_tokens": ("span", ("gen_ai.usage.cache_read.input_tokens",)),
    "http_status": ("span", ("http.response.status_code",)),
}
_DEFAULTS = {"service": "unknown_service", "environment": "production", "model": "unknown"}
_DIMENSIONS = frozenset({"service", "environment", "model", "provider", "session_id", "user_id"})


def request_event(span, resource: dict[str, Any], feature_attributes) -> Mapped | None:
    """The request event of a GenAI model-call span (an ``opentelemetry.proto.trace.v1.Span``), else None.
    ``feature_attributes``: otlp.feature_attributes; without any of them, the operation name (or OpenLLMetry's
    ``llm.request.type``), else ``unknown``. Values are passed on as sent, for the pipeline to check in the
    attributes' names; what cannot be mapped at all (ids, times, message shapes) is an error here."""
    attrs = attributes(span.attributes)
    if not is_model_call(attrs):
        return None
    read, rejected = _read(span, lambda: _timed_texts(span, attrs))
    if rejected is not None:
        return rejected
    found, text_origin = read
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    status, error_type = _outcome(span, attrs)
    feature_from, feature = _pick(attrs, (*feature_attributes, "gen_ai.operation.name", "llm.request.type"))
    event = {
        "request_id": request_id(span.trace_id, span.span_id),
        "ts": _iso(start),
        "feature": _scalar_text(feature) if feature_from else "unknown",
        "status": status,
        "error_type": error_type,
        "latency_ms": (end - start) / 1e6,
    }
    origin = {"ts": "start_time_unix_nano", "latency_ms": "end_time_unix_nano", "error_type": "error.type",
              **text_origin}
    if feature_from:
        origin["feature"] = feature_from
    for field, (where, names) in _COPIED.items():
        name, v = _pick(resource if where == "resource" else attrs, names)
        if name is not None:
            event[field] = _scalar_text(v) if field in _DIMENSIONS else v
            origin[field] = name if where == "span" else f"resource {name}"
        elif field in _DEFAULTS:
            event[field] = _DEFAULTS[field]
    ttft = _ttft_ms(span, attrs)
    if ttft is not None:
        event["ttft_ms"], origin["ttft_ms"] = ttft
    event.update(found)
    return Mapped(event, partial(otlp.record_json, span), origin)


def _outcome(span, attrs: dict[str, Any]) -> tuple[str, Any]:
    """(status, error_type): span status ERROR or an ``error.type`` is an error, a timeout when it says so."""
    error_type = _scalar_text(_first(attrs, "error.type") or "")
    if span.status.code != STATUS_CODE_ERROR and not error_type:
        return "ok", ""
    return ("timeout" if isinstance(error_type, str) and "timeout" in error_type.lower() else "error"), error_type


def _read(record, read) -> tuple[Any, Mapped | None]:
    """(what ``read()`` finds in a span or log record, None), or (None, the record rejected) when its ids are
    no good or ``read`` raises FieldError."""
    errors = id_errors(record.trace_id, record.span_id)
    try:
        found = read()
    except FieldError as exc:
        errors.append(exc)
    return (None, Mapped(None, partial(otlp.record_json, record), errors=errors)) if errors else (found, None)


def _timed_texts(span, attrs: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The span's texts (:func:`texts`), once its times are known to be in order."""
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if end < start:
        raise FieldError("end_time_unix_nano", f"before start_time_unix_nano ({end} < {start})")
    return texts(attrs)


def _ttft_ms(span, attrs: dict[str, Any]) -> tuple[Any, str] | None:
    """(time to first token in ms as sent, the attribute or event it came from), when the span says."""
    name, seconds = _pick(attrs, ("gen_ai.response.time_to_first_chunk",))
    if name is not None:
        return (seconds * 1000.0 if _is_number(seconds) else seconds), name
    for ev in span.events:  # a first-token event, as some instrumentations record it
        if "first_token" in ev.name or "first_chunk" in ev.name:
            return (ev.time_unix_nano - span.start_time_unix_nano) / 1e6, f"event {ev.name} time_unix_nano"
    return None


def model_calls(export, feature_attributes) -> tuple[list[tuple[str, str, Mapped]], list[str], int]:
    """The model-call spans of an export, each mapped on its own: (trace id, span id, row), a label naming
    each in answers (its request id, or its place in the export when its ids are no good), and how many
    other spans were ignored. A span with the ids of an earlier one in the export is rejected: the first wins,
    as for a request id sent twice, but here it is reported, since one export never holds a span twice."""
    spans, labels, ignored, seen = [], [], 0, {}
    number = -1
    for resource_spans in export.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                number += 1
                row = request_event(span, resource, feature_attributes)
                if row is None:
                    ignored += 1
                    continue
                key = (span.trace_id.hex(), span.span_id.hex())
                named = row.row is not None or not any(e.field in ID_BYTES for e in row.errors)
                if named and key in seen:
                    row = Mapped(None, row.source, errors=[FieldError(
                        "span_id", f"the same trace and span ids as span #{seen[key]} of this export")])
                seen.setdefault(key, number)
                spans.append((*key, row))
                labels.append(request_id(span.trace_id, span.span_id) if named else f"span #{number}")
    return spans, labels, ignored


# -- texts ---------------------------------------------------------------------------------------
def texts(attrs: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """input_text and output_text from message attributes (current or pre-1.37 names), when present, and
    the attribute each came from. FieldError, naming the attribute, for messages of a shape no convention has."""
    out, origin = {}, {}
    inputs, inputs_from = _messages(attrs, "gen_ai.input.messages", "gen_ai.prompt")
    outputs, outputs_from = _messages(attrs, "gen_ai.output.messages", "gen_ai.completion")
    question = next((m for m in reversed(inputs) if m.get("role") == "user"), None)
    if question is not None:
        out["input_text"], origin["input_text"] = message_text(question, inputs_from), inputs_from
    if outputs:
        out["output_text"], origin["output_text"] = message_text(outputs[0], outputs_from), outputs_from
    return {k: v for k, v in out.items() if v}, {k: v for k, v in origin.items() if out.get(k)}


def _messages(attrs: dict[str, Any], name: str, flattened: str) -> tuple[list[dict], str]:
    """The messages of attribute ``name`` (a JSON string or structured), else of the pre-1.37 flattened
    ``<flattened>.N.role/content`` attributes; and which of the two they came from."""
    raw = attrs.get(name)
    if raw in (None, ""):
        return _flattened(attrs, flattened), flattened
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)  # orjson: a string nested past 1,024 levels is an error, not a crash
        except orjson.JSONDecodeError as exc:
            raise FieldError(name, f"not valid JSON ({exc})") from None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise FieldError(name, "must be an array of message objects")
    return raw, name


def _flattened(attrs: dict[str, Any], prefix: str) -> list[dict]:
    """gen_ai.prompt.0.role / gen_ai.prompt.0.content ... as a list of messages."""
    found: dict[int, dict] = {}
    for key, v in attrs.items():
        if not key.startswith(prefix + "."):
            continue
        index, _, field = key[len(prefix) + 1:].partition(".")
        if index.isdigit() and field in ("role", "content"):
            found.setdefault(int(index), {})[field] = v
    return [found[i] for i in sorted(found)]


def message_text(message: dict, name: str) -> str:
    """The text of a message in any of the shapes instrumentations emit: ``parts`` (current), ``content``
    as a string or a list of parts (older), or a choice's ``message``. Parts that are not text (images, tool
    calls, files) are left out; FieldError (naming ``name``, where the message came from) for a shape that
    is none of these."""
    if isinstance(message.get("message"), dict):
        message = message["message"]
    parts = message.get("parts")
    if parts is None:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "content": content}]
    if not isinstance(parts, list):
        raise FieldError(name, f"parts must be an array, got {_kind(parts)}")
    pieces = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            text = part.get("content", part.get("text"))
            if text is not None and not isinstance(text, str):
                raise FieldError(name, f"a text part's content must be a string, got {_kind(text)}")
            pieces.append(text or "")
    return "\n\n".join(p for p in pieces if p)


def _kind(v: Any) -> str:
    """A value's type in JSON's words, for reasons a sender reads."""
    if isinstance(v, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(type(v), "null")


# -- log events ------------------------------------------------------------------------------------
CONTENT_EVENTS = frozenset({"gen_ai.client.inference.operation.details", "gen_ai.user.message",
                            "gen_ai.system.message", "gen_ai.assistant.message", "gen_ai.tool.message",
                            "gen_ai.choice"})
EVALUATION_EVENT = "gen_ai.evaluation.result"


def record_time(record) -> int:
    """When the event happened (unix ns): its time, or when it was observed (the SDK sets only that)."""
    return record.time_unix_nano or record.observed_time_unix_nano


def event_name(record) -> str:
    """A log record's event name: the field (OTLP 1.5+) or the older ``event.name`` attribute."""
    return record.event_name or str(attributes(record.attributes).get("event.name") or "")


def log_events(export, kinds: dict[str, str]) -> tuple[list[tuple[str, str, int, Mapped]], list[str],
                                                        list[Mapped], list[str]]:
    """The GenAI log records of an export nlpmon reads, each mapped on its own: content records as
    (trace id, span id, time, texts) and evaluation records as feedback rows, each list with labels naming its
    records in answers (their place in the export). Records outside any span (no span id) are not for a
    request and are left alone, as are other events."""
    contents, content_labels, evaluations, evaluation_labels = [], [], [], []
    number = -1
    for resource_logs in export.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                number += 1
                name = event_name(record)
                if not any(record.span_id) or name not in CONTENT_EVENTS | {EVALUATION_EVENT}:
                    continue
                label = f"log record #{number} ({name})"
                if name == EVALUATION_EVENT:
                    row = evaluation_feedback(record, kinds)
                    if row is not None:
                        evaluations.append(row)
                        evaluation_labels.append(label)
                    continue
                contents.append((record.trace_id.hex(), record.span_id.hex(), record_time(record),
                                 content_texts(record)))
                content_labels.append(label)
    return contents, content_labels, evaluations, evaluation_labels


def content_texts(record) -> Mapped:
    """input_text / output_text a content log event carries (none when content capture is off), as a row of
    texts whose origin names where in the record each came from."""
    read, rejected = _read(record, lambda: _content(record))
    return rejected or Mapped(read[0], partial(otlp.record_json, record), read[1])


def _content(record) -> tuple[dict[str, str], dict[str, str]]:
    name = event_name(record)
    body = value(record.body)
    if name == "gen_ai.client.inference.operation.details":
        return texts({**attributes(record.attributes), **(body if isinstance(body, dict) else {})})
    if not isinstance(body, dict):
        return {}, {}
    field = {"gen_ai.user.message": "input_text", "gen_ai.choice": "output_text"}.get(name)
    if field is None or (name == "gen_ai.choice" and _choice_index(body) != 0):
        return {}, {}
    text = message_text(body, "body")
    return ({field: text}, {field: "body"}) if text else ({}, {})


def _choice_index(body: dict) -> int:
    """A choice's index: the first choice (0) is the answer."""
    index = body.get("index", 0)
    if index is None:
        return 0
    if _is_number(index) and math.isfinite(index) and index == int(index):
        return int(index)
    raise FieldError("body.index", f"must be an integer, got {_kind(index)}")


def evaluation_feedback(record, kinds: dict[str, str]) -> Mapped | None:
    """The feedback row of a ``gen_ai.evaluation.result`` event on the span it evaluates, when its
    ``gen_ai.evaluation.name`` maps to a feedback kind (otlp.evaluation_kinds)."""
    attrs = {**attributes(record.attributes)}
    body = value(record.body)
    if isinstance(body, dict):
        attrs = {**body, **attrs}
    name = str(attrs.get("gen_ai.evaluation.name") or "")
    kind = kinds.get(name)
    if kind is None:
        return None
    _, rejected = _read(record, lambda: None)
    if rejected is not None:
        return rejected
    row = {"request_id": request_id(record.trace_id, record.span_id),
           "feedback_id": f"otel-eval-{record.trace_id.hex()}-{record.span_id.hex()}-{kind}",
           "ts": _iso(record_time(record)), "kind": kind, "source": "auto",
           # An external evaluator, named by its evaluation: measured against reviewers like nlpmon's judges.
           "reviewer": name}
    origin = {"ts": "time_unix_nano"}
    for field, name in (("value", "gen_ai.evaluation.score.value"), ("label", "gen_ai.evaluation.score.label"),
                        ("comment", "gen_ai.evaluation.explanation")):
        v = attrs.get(name)
        if v is not None and v != "":
            row[field], origin[field] = (v if field == "value" else _scalar_text(v)), name
    return Mapped(row, partial(otlp.record_json, record), origin)
