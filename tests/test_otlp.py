"""OpenTelemetry ingest, driven by the real OpenTelemetry Python SDK and its OTLP/HTTP exporter against the
app on a loopback server: GenAI spans land as requests field by field, other spans are ignored."""
from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from monitor.foundation.tables import requests as request_rows

CURRENT = {  # semantic conventions 1.37+
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 40,
    "gen_ai.usage.cache_read.input_tokens": 64, "gen_ai.conversation.id": "conv-1", "user.id": "alice",
    "nlpmon.feature": "answer",
    "gen_ai.input.messages": json.dumps([
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Where is my order?"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "Which order?"}]},
        {"role": "user", "parts": [{"type": "text", "content": "Order 42, placed Monday."}]}]),
    "gen_ai.output.messages": json.dumps([
        {"role": "assistant", "parts": [{"type": "text", "content": "It ships tomorrow."}], "finish_reason": "stop"}]),
}
LEGACY = {  # pre-1.37 names, as older instrumentations (and OpenLLMetry) emit them
    "gen_ai.system": "anthropic", "llm.request.type": "chat", "gen_ai.request.model": "claude-3-5-sonnet",
    "gen_ai.usage.prompt_tokens": 300,
    "gen_ai.usage.completion_tokens": 90, "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Translate: hi",
    "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "hallo",
}


@pytest.fixture
def exporter(live_server, keys, clock):
    clock.set(dt.datetime.now(dt.timezone.utc))  # the SDK stamps spans with the real time

    def make(compression=Compression.NoCompression):
        provider = TracerProvider(resource=Resource.create({"service.name": "support-bot",
                                                            "deployment.environment.name": "staging"}))
        exp = OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces", compression=compression,
                               headers={"Authorization": f"Bearer {keys['ingest']}"})
        provider.add_span_processor(SimpleSpanProcessor(exp))
        finished = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(finished))
        return provider.get_tracer("test"), exp, finished
    return make


def _stored(store, span) -> dict:
    ctx = span.get_span_context()
    row = request_rows.get(store, f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}")
    assert row is not None, "span not stored"
    return row


def test_genai_spans_land_as_requests_field_by_field(exporter, store):
    tracer, _, _ = exporter()
    with tracer.start_as_current_span("http GET /ask") as handler:  # not a model call: ignored
        with tracer.start_as_current_span("chat gpt-4o", attributes=CURRENT) as chat:
            pass
        with tracer.start_as_current_span("anthropic.chat", attributes=LEGACY) as legacy:
            pass
        with tracer.start_as_current_span("chat gpt-4o", attributes={**CURRENT, "error.type": "TimeoutError"}) as slow:
            slow.set_status(Status(StatusCode.ERROR))
    row = _stored(store, chat)
    assert {k: row[k] for k in ("service", "environment", "feature", "model", "provider", "status", "input_tokens",
                                "output_tokens", "cached_input_tokens", "session_id")} == {
        "service": "support-bot", "environment": "staging", "feature": "answer", "model": "gpt-4o-2024-08-06",
        "provider": "openai", "status": "ok", "input_tokens": 120, "output_tokens": 40, "cached_input_tokens": 64,
        "session_id": "conv-1"}
    assert row["input_text"] == "Order 42, placed Monday." and row["output_text"] == "It ships tomorrow."
    assert row["user_id_hash"] not in ("", "alice") and len(row["user_id_hash"]) == 32  # hashed, as for events
    assert row["cost_usd"] > 0  # priced from the table, as for events
    assert abs(row["latency_ms"] - (chat.end_time - chat.start_time) / 1e6) < 1
    old = _stored(store, legacy)
    assert (old["provider"], old["model"], old["input_tokens"], old["output_tokens"], old["input_text"],
            old["output_text"], old["feature"]) == ("anthropic", "claude-3-5-sonnet", 300, 90, "Translate: hi",
                                                     "hallo", "chat")
    failed = _stored(store, slow)
    assert (failed["status"], failed["error_type"]) == ("timeout", "TimeoutError")
    ctx = handler.get_span_context()
    assert request_rows.get(store, f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}") is None
    assert store.scalar("SELECT count() FROM requests") == 3


def test_a_retried_export_lands_once_and_gzip_is_read(exporter, store):
    tracer, exp, finished = exporter(Compression.Gzip)
    with tracer.start_as_current_span("chat", attributes=CURRENT) as span:
        pass
    assert _stored(store, span)["feature"] == "answer"
    # The exporter sends the same batch again, as it does when an answer is lost: stored once.
    assert exp.export(finished.get_finished_spans()).name == "SUCCESS"
    assert store.scalar("SELECT count() FROM requests") == 1
    assert store.scalar("SELECT sum(requests) FROM requests_1m") == 1


def _post(client, key, body: bytes, ctype: str, **headers):
    return client.post("/v1/traces", data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": ctype,
                                                           **headers})


def _json_export(spans: list[dict]) -> dict:
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                           "value": {"stringValue": "copilot"}}]},
                               "scopeSpans": [{"spans": spans}]}]}


def _json_span(span_id: str, attrs: dict, start_ns: int) -> dict:
    def anyvalue(v):
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}  # OTLP JSON: 64-bit integers as strings
        return {"stringValue": str(v)}
    return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": "chat",
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + 850_000_000),
            "attributes": [{"key": k, "value": anyvalue(v)} for k, v in attrs.items()]}


def test_otlp_json_partial_success_and_errors(client, keys, store, clock):
    now = dt.datetime.now(dt.timezone.utc)
    clock.set(now)
    start = int(now.timestamp() * 1e9)
    good = _json_span("eee19b7ec3c1b174", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                                           "gen_ai.usage.input_tokens": 10}, start)
    bad = _json_span("eee19b7ec3c1b175", {"gen_ai.request.model": "gpt-4o-mini"}, start + 10**18)  # far future
    r = _post(client, keys["ingest"], json.dumps(_json_export([good, bad])).encode(), "application/json")
    assert r.status_code == 200 and r.content_type.startswith("application/json")
    assert r.json["partialSuccess"]["rejectedSpans"] == "1"
    assert "otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b175: ts" in r.json["partialSuccess"]["errorMessage"]
    row = request_rows.get(store, "otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174")
    assert (row["service"], row["model"], row["input_tokens"], row["latency_ms"]) == ("copilot", "gpt-4o-mini", 10,
                                                                                      850.0)
    # Protobuf answered in protobuf; a body that is not OTLP is a 400; other types a 415; no key a 401.
    r = _post(client, keys["ingest"], gzip.compress(b"\x00\x01garbage"), "application/x-protobuf",
              **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "ExportTraceServiceRequest" in r.json["message"]
    r = _post(client, keys["ingest"], ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")
    assert r.status_code == 200 and r.content_type == "application/x-protobuf"
    assert _post(client, keys["ingest"], b"{}", "text/plain").status_code == 415
    assert _post(client, "nope", b"{}", "application/json").status_code == 401
    assert _post(client, keys["read"], b"{}", "application/json").status_code == 403
