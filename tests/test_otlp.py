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
from monitor.scheduler import build_jobs

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
    # Without texts on the span it waits otlp.logs_wait for content events, then lands.
    assert request_rows.get(store, "otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174") is None
    build_jobs(store, client.application.extensions["nlpmon"].config, clock)["otlp_join"].run(
        now + dt.timedelta(seconds=6))
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


@pytest.fixture
def otel(live_server, keys, clock):
    """A tracer and a logger exporting to the app as an instrumented app does (the SDK's OTLP/HTTP exporters)."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    clock.set(dt.datetime.now(dt.timezone.utc))
    resource = Resource.create({"service.name": "support-bot"})
    auth = {"Authorization": f"Bearer {keys['ingest']}"}
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces",
                                                                            headers=auth)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(
        endpoint=f"{live_server.url}/v1/logs", headers=auth)))
    return tracer_provider.get_tracer("test"), logger_provider.get_logger("test")


def _content_events(logger, span, question="Is the AI plan on sale?", answer="Yes, until Friday."):
    from opentelemetry import trace
    ctx = trace.set_span_in_context(span)
    logger.emit(event_name="gen_ai.user.message", body={"content": "an earlier question"}, context=ctx)
    logger.emit(event_name="gen_ai.user.message", body={"content": question}, context=ctx)
    logger.emit(event_name="gen_ai.choice", context=ctx,
                body={"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}})


NO_CONTENT = {k: v for k, v in CURRENT.items() if not k.endswith(".messages")}


def test_content_events_join_their_span_in_either_order(otel, app, store, clock):
    tracer, logger = otel
    # Logs first: the span finds its content waiting and lands at once, with the newest question.
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as first:
        _content_events(logger, first)
    row = _stored(store, first)
    assert (row["input_text"], row["output_text"]) == ("Is the AI plan on sale?", "Yes, until Friday.")
    # Span first: parked (accepted, not yet a request) until otlp.logs_wait has passed.
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as second:
        pass
    ctx = second.get_span_context()
    rid = f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}"
    assert request_rows.get(store, rid) is None
    _content_events(logger, second, question="And the crypto payouts?", answer="They start in March.")
    job = build_jobs(store, app.extensions["nlpmon"].config, clock)["otlp_join"]
    assert job.run(clock.now()).rows == 0  # still within logs_wait
    assert job.run(clock.now() + dt.timedelta(seconds=6)).rows == 1
    row = request_rows.get(store, rid)
    assert (row["input_text"], row["output_text"]) == ("And the crypto payouts?", "They start in March.")
    assert job.run(clock.now() + dt.timedelta(seconds=12)).rows == 0  # once
    assert store.scalar("SELECT sum(requests) FROM requests_1m") == 2


def test_evaluation_results_become_feedback(otel, store):
    from opentelemetry import trace
    tracer, logger = otel
    with tracer.start_as_current_span("chat", attributes=CURRENT) as span:
        pass
    logger.emit(event_name="gen_ai.evaluation.result", context=trace.set_span_in_context(span),
                attributes={"gen_ai.evaluation.name": "task_success", "gen_ai.evaluation.score.value": 1.0,
                            "gen_ai.evaluation.score.label": "pass"})
    logger.emit(event_name="gen_ai.evaluation.result", context=trace.set_span_in_context(span),
                attributes={"gen_ai.evaluation.name": "unmapped", "gen_ai.evaluation.score.value": 0.2})
    rid = _stored(store, span)["request_id"]
    rows = store.query_dicts("SELECT kind, value, label, source FROM feedback FINAL WHERE request_id = {r:String}",
                             {"r": rid})
    assert rows == [{"kind": "task_success", "value": 1.0, "label": "pass", "source": "auto"}]


def test_the_sli_job_and_the_overview_see_spans_as_they_see_events(client, keys, store, clock, app):
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    clock.set(now)
    start = now - dt.timedelta(minutes=30)
    events, spans = [], []
    for i in range(40):
        ts = start + dt.timedelta(seconds=30 * i)
        latency_ms = 400.0 + 37 * i
        failed = i % 10 == 0
        events.append({"request_id": f"ev-{i}", "ts": ts.isoformat(), "service": "via-events", "feature": "answer",
                       "model": "gpt-4o", "provider": "openai", "status": "error" if failed else "ok",
                       "error_type": "RateLimitError" if failed else "", "latency_ms": latency_ms,
                       "input_tokens": 100 + i, "output_tokens": 20 + i, "input_text": f"question {i}",
                       "output_text": f"answer {i}"})
        start_ns = int(ts.timestamp() * 1e9)
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                 "gen_ai.usage.input_tokens": 100 + i, "gen_ai.usage.output_tokens": 20 + i, "nlpmon.feature": "answer",
                 "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text",
                                                                                  "content": f"question {i}"}]}]),
                 "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text",
                                                                                        "content": f"answer {i}"}]}])}
        if failed:
            attrs["error.type"] = "RateLimitError"
        span = _json_span(f"{i:016x}", attrs, start_ns)
        span["endTimeUnixNano"] = str(start_ns + int(latency_ms * 1e6))
        spans.append(span)
    body = _json_export(spans)
    body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"] = "via-otlp"
    assert client.post("/v1/requests", json=events, headers={"Authorization": f"Bearer {keys['ingest']}"}).status_code == 200
    assert _post(client, keys["ingest"], json.dumps(body).encode(), "application/json").status_code == 200
    assert build_jobs(store, app.extensions["nlpmon"].config, clock)["sli"].run(
        now + dt.timedelta(minutes=2), since=start - dt.timedelta(minutes=1)).status == "ok"
    points = {}
    for service, metric, value in store.query(
            "SELECT labels['service'], metric, sum(value) FROM metric_points FINAL WHERE `window` = '5m' "
            "AND labels['service'] IN ('via-events', 'via-otlp') AND mapKeys(labels) = ['service'] "
            "GROUP BY labels['service'], metric"):
        points.setdefault(metric, {})[service] = value
    assert {"requests", "error_rate", "latency_p95_ms", "availability"} <= set(points)
    for metric, by_service in points.items():
        assert by_service.get("via-events") == pytest.approx(by_service.get("via-otlp"), rel=1e-6), metric
