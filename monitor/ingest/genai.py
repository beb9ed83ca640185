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
import json
from typing import Any

MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
STATUS_CODE_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


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


def is_model_call(attrs: dict[str, Any]) -> bool:
    return attrs.get("gen_ai.operation.name") in MODEL_OPERATIONS or bool(attrs.get("gen_ai.request.model"))


def _iso(unix_nano: int) -> str:
    return dt.datetime.fromtimestamp(unix_nano / 1e9, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _first(attrs: dict[str, Any], *names: str) -> Any:
    for name in names:
        v = attrs.get(name)
        if v not in (None, ""):
            return v
    return None


def _int(v: Any) -> int:
    try:
        return max(0, int(v))
    except (TypeError, ValueError):
        return 0


def request_event(span, resource: dict[str, Any], feature_attributes) -> dict | None:
    """The request event of a GenAI model-call span (an ``opentelemetry.proto.trace.v1.Span``), else None.
    ``feature_attributes``: otlp.feature_attributes; without any of them, the operation name (or OpenLLMetry's
    ``llm.request.type``), else ``unknown``."""
    attrs = attributes(span.attributes)
    if not is_model_call(attrs):
        return None
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    error_type = str(_first(attrs, "error.type") or "")
    failed = span.status.code == STATUS_CODE_ERROR or bool(error_type)
    status = "ok"
    if failed:
        status = "timeout" if "timeout" in error_type.lower() else "error"
    event = {
        "request_id": request_id(span.trace_id, span.span_id),
        "ts": _iso(start),
        "service": str(_first(resource, "service.name") or "unknown_service"),
        "environment": str(_first(resource, "deployment.environment.name", "deployment.environment") or "production"),
        "feature": str(_first(attrs, *feature_attributes, "gen_ai.operation.name", "llm.request.type") or "unknown"),
        "model": str(_first(attrs, "gen_ai.response.model", "gen_ai.request.model") or "unknown"),
        "provider": str(_first(attrs, "gen_ai.provider.name", "gen_ai.system") or ""),
        "status": status,
        "error_type": error_type if failed else "",
        "latency_ms": max(0.0, (end - start) / 1e6) if end else 0.0,
        "input_tokens": _int(_first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
        "output_tokens": _int(_first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")),
        "cached_input_tokens": _int(_first(attrs, "gen_ai.usage.cache_read.input_tokens")),
        "session_id": str(_first(attrs, "gen_ai.conversation.id") or ""),
        "user_id": str(_first(attrs, "user.id", "enduser.id") or ""),
    }
    http_status = _first(attrs, "http.response.status_code")
    if http_status is not None:
        event["http_status"] = _int(http_status)
    ttft = _ttft_ms(span, attrs)
    if ttft is not None:
        event["ttft_ms"] = ttft
    event.update(texts(attrs))
    return event


def _ttft_ms(span, attrs: dict[str, Any]) -> float | None:
    seconds = _first(attrs, "gen_ai.response.time_to_first_chunk")
    if seconds is not None:
        try:
            return float(seconds) * 1000.0
        except (TypeError, ValueError):
            return None
    for ev in span.events:  # a first-token event, as some instrumentations record it
        if "first_token" in ev.name or "first_chunk" in ev.name:
            return max(0.0, (ev.time_unix_nano - span.start_time_unix_nano) / 1e6)
    return None


# -- texts ---------------------------------------------------------------------------------------
def texts(attrs: dict[str, Any]) -> dict[str, str]:
    """input_text and output_text from message attributes (current or pre-1.37 names), when present."""
    out = {}
    inputs = _messages(attrs.get("gen_ai.input.messages")) or _flattened(attrs, "gen_ai.prompt")
    outputs = _messages(attrs.get("gen_ai.output.messages")) or _flattened(attrs, "gen_ai.completion")
    question = next((m for m in reversed(inputs) if m.get("role") == "user"), None)
    if question is not None:
        out["input_text"] = message_text(question)
    if outputs:
        out["output_text"] = message_text(outputs[0])
    return {k: v for k, v in out.items() if v}


def _messages(raw: Any) -> list[dict]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    if isinstance(raw, dict):
        raw = [raw]
    return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []


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


def message_text(message: dict) -> str:
    """The text of a message in any of the shapes instrumentations emit: ``parts`` (current), ``content``
    as a string or a list of parts (older), or a choice's ``message``."""
    if isinstance(message.get("message"), dict):
        message = message["message"]
    parts = message.get("parts")
    if parts is None:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "content": content}]
    pieces = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            text = part.get("content", part.get("text"))
            if isinstance(text, str):
                pieces.append(text)
    return "\n\n".join(p for p in pieces if p)


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


def content_texts(record) -> dict[str, str]:
    """input_text / output_text a content log event carries (empty when content capture is off)."""
    name = event_name(record)
    attrs = attributes(record.attributes)
    body = value(record.body)
    if name == "gen_ai.client.inference.operation.details":
        merged = {**attrs, **(body if isinstance(body, dict) else {})}
        return texts(merged)
    if not isinstance(body, dict):
        return {}
    if name == "gen_ai.user.message":
        return {"input_text": message_text(body)} if message_text(body) else {}
    if name == "gen_ai.choice" and int(body.get("index", 0) or 0) == 0:
        return {"output_text": message_text(body)} if message_text(body) else {}
    return {}


def evaluation_feedback(record, kinds: dict[str, str]) -> dict | None:
    """The feedback row of a ``gen_ai.evaluation.result`` event on the span it evaluates, when its
    ``gen_ai.evaluation.name`` maps to a feedback kind (otlp.evaluation_kinds)."""
    attrs = {**attributes(record.attributes)}
    body = value(record.body)
    if isinstance(body, dict):
        attrs = {**body, **attrs}
    kind = kinds.get(str(attrs.get("gen_ai.evaluation.name") or ""))
    if kind is None:
        return None
    row = {"request_id": request_id(record.trace_id, record.span_id),
           "feedback_id": f"otel-eval-{record.trace_id.hex()}-{record.span_id.hex()}-{kind}",
           "ts": _iso(record_time(record)), "kind": kind, "source": "auto"}
    score = attrs.get("gen_ai.evaluation.score.value")
    if score is not None:
        row["value"] = score
    label = attrs.get("gen_ai.evaluation.score.label")
    if label:
        row["label"] = str(label)
    explanation = attrs.get("gen_ai.evaluation.explanation")
    if explanation:
        row["comment"] = str(explanation)
    return row
