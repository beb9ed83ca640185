"""OpenTelemetry ingest, driven by the real OpenTelemetry Python SDK and its OTLP/HTTP exporter against the
app on a loopback server: GenAI spans land as requests field by field, other spans are ignored. What the SDK
cannot produce (zero or short ids, one span twice, odd AnyValues, broken bodies) is built with the
opentelemetry-proto classes or as OTLP JSON: each bad record is refused alone, named, and kept."""
from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import time

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceMessage
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from monitor.app import create_app
from monitor.foundation.tables import otlp_parts
from monitor.foundation.tables import requests as request_rows
from monitor.ingest import genai
from monitor.scheduler import build_jobs
from tests.helpers import LiveServer, auth, request_event
from tests.otel_records import CURRENT, NO_CONTENT, content_events, request_id

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
    return row.as_dict()


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


def _post(client, key, body: bytes, ctype: str, path: str = "/v1/traces", **headers):
    return client.post(path, data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": ctype, **headers})


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
    assert ("otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b175: start_time_unix_nano: is in the future"
            in r.json["partialSuccess"]["errorMessage"])
    # Without texts on the span it waits otlp.logs_wait for content events, then lands.
    assert request_rows.get(store, "otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174") is None
    build_jobs(store, client.application.extensions["nlpmon"].config, clock)["otlp_join"].run(
        now + dt.timedelta(seconds=6))
    row = request_rows.get(store, "otel-5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174").as_dict()
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


def test_content_events_join_their_span_in_either_order(otel, app, store, clock):
    tracer, logger = otel
    # Logs first: the span finds its content waiting and lands at once, with the newest question.
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as first:
        content_events(logger, first)
    row = _stored(store, first)
    assert (row["input_text"], row["output_text"]) == ("Is the AI plan on sale?", "Yes, until Friday.")
    # Span first: parked (accepted, not yet a request) until otlp.logs_wait has passed.
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as second:
        pass
    ctx = second.get_span_context()
    rid = f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}"
    assert request_rows.get(store, rid) is None
    content_events(logger, second, question="Und wann kommen die Auszahlungen?", answer="Sie beginnen im März.")
    job = build_jobs(store, app.extensions["nlpmon"].config, clock)["otlp_join"]
    assert job.run(clock.now()).rows == 0  # still within logs_wait
    assert job.run(clock.now() + dt.timedelta(seconds=6)).rows == 1
    row = request_rows.get(store, rid).as_dict()
    assert (row["input_text"], row["output_text"]) == ("Und wann kommen die Auszahlungen?", "Sie beginnen im März.")
    # Its language is the joined question's: detected when the request is whole, not when the span parked.
    assert (row["language"], row["language_source"]) == ("de", "detected")
    assert job.run(clock.now() + dt.timedelta(seconds=12)).rows == 0  # once
    assert store.scalar("SELECT sum(requests) FROM requests_1m") == 2


def test_evaluation_results_become_feedback(otel, store, app, keys):
    tracer, logger = otel
    with tracer.start_as_current_span("chat", attributes=CURRENT) as span:
        pass
    logger.emit(event_name="gen_ai.evaluation.result", context=trace.set_span_in_context(span),
                attributes={"gen_ai.evaluation.name": "task_success", "gen_ai.evaluation.score.value": 1.0,
                            "gen_ai.evaluation.score.label": "pass"})
    logger.emit(event_name="gen_ai.evaluation.result", context=trace.set_span_in_context(span),
                attributes={"gen_ai.evaluation.name": "unmapped", "gen_ai.evaluation.score.value": 0.2})
    logger.emit(event_name="gen_ai.evaluation.result", context=trace.set_span_in_context(span),
                attributes={"gen_ai.evaluation.name": "hallucination", "gen_ai.evaluation.score.label": "hallucinated",
                            "gen_ai.evaluation.explanation": "invents a refund policy"})
    rid = _stored(store, span)["request_id"]
    rows = store.query_dicts("SELECT kind, value, label, source, reviewer FROM feedback FINAL "
                             "WHERE request_id = {r:String} ORDER BY kind", {"r": rid})
    assert rows == [
        {"kind": "hallucination", "value": None, "label": "hallucinated", "source": "auto", "reviewer": "hallucination"},
        {"kind": "task_success", "value": 1.0, "label": "pass", "source": "auto", "reviewer": "task_success"}]
    # An evaluator outside nlpmon: on the Evaluators answer beside the configured judges, measured the same way.
    listed = app.test_client().get("/v1/evaluators", headers={"Authorization": f"Bearer {keys['read']}"}).get_json()
    external = next(e for e in listed["evaluators"] if e["name"] == "hallucination")
    assert external["kind"] == "external" and external["agreement"]["judged"] == 1
    assert "not enough overlap" in external["agreement"]["reason"]


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
        span = _json_span(f"{i + 1:016x}", attrs, start_ns)  # an all-zero id is no span
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


# -- one record at a time: a bad one is rejected alone, named, and kept ---------------------------------------
PROTOBUF = "application/x-protobuf"
ANSWERED = {
    "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 12,
    "gen_ai.usage.output_tokens": 3,
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Done."}]}]),
    # Attributes nlpmon does not read never cost a span, whatever they hold.
    "gen_ai.request.temperature": math.nan, "gen_ai.usage.audio_tokens": "lots", "app.retries": -3,
}
BAD_SPANS = {  # what makes the span bad, the attribute its rejection names, what the reason says
    "tokens-inf": ({"gen_ai.usage.input_tokens": math.inf}, "gen_ai.usage.input_tokens", "finite integer"),
    "tokens-nan": ({"gen_ai.usage.output_tokens": math.nan}, "gen_ai.usage.output_tokens", "finite integer"),
    "tokens-1e30": ({"gen_ai.usage.input_tokens": 1e30}, "gen_ai.usage.input_tokens", "above the limit of 10000000"),
    "tokens-negative": ({"gen_ai.usage.output_tokens": -5}, "gen_ai.usage.output_tokens", "must not be negative"),
    "tokens-text": ({"gen_ai.usage.input_tokens": "120"}, "gen_ai.usage.input_tokens", "got string"),
    "tokens-true": ({"gen_ai.usage.input_tokens": True}, "gen_ai.usage.input_tokens", "got boolean"),
    "cached-negative": ({"gen_ai.usage.cache_read.input_tokens": -1}, "gen_ai.usage.cache_read.input_tokens",
                        "must not be negative"),
    "input-parts-int": ({"gen_ai.input.messages": json.dumps([{"role": "user", "parts": 7}])}, "gen_ai.input.messages",
                        "parts must be an array, got number"),
    "output-parts-int": ({"gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": 7}])},
                         "gen_ai.output.messages", "parts must be an array, got number"),
    "messages-not-json": ({"gen_ai.input.messages": '[{"role": "user", "parts": ['}, "gen_ai.input.messages",
                          "not valid JSON"),
    "ttft-text": ({"gen_ai.response.time_to_first_chunk": "fast"}, "gen_ai.response.time_to_first_chunk",
                  "must be a number"),
    "http-status-text": ({"http.response.status_code": "teapot"}, "http.response.status_code", "must be an integer"),
}


@pytest.fixture
def recorded(clock):
    """A tracer whose finished spans wait in memory, to be sent in one export as a batch processor sends them."""
    clock.set(dt.datetime.now(dt.timezone.utc))
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    finished = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(finished))
    return provider.get_tracer("test"), finished


@pytest.fixture
def recorded_logs(clock):
    provider = LoggerProvider(resource=Resource.create({"service.name": "support-bot"}))
    finished = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(finished))
    return provider.get_logger("test"), finished


def _export(client, key, message, path="/v1/traces"):
    """An export request sent as the SDK's exporter sends it (protobuf); its partial_success."""
    r = _post(client, key, message.SerializeToString(), PROTOBUF, path=path)
    assert r.status_code == 200, r.data[:500]
    answer = ExportTraceServiceResponse() if path == "/v1/traces" else ExportLogsServiceResponse()
    answer.ParseFromString(r.data)
    return answer.partial_success


def _rejected(store) -> list[dict]:
    return store.query_dicts("SELECT kind, field, reason, raw FROM rejected_events ORDER BY kind DESC, row_index")


@pytest.mark.parametrize("case", list(BAD_SPANS))
def test_one_bad_span_is_rejected_alone(recorded, client, keys, store, case):
    bad_attributes, attribute, reason = BAD_SPANS[case]
    tracer, finished = recorded
    for _ in range(100):
        with tracer.start_as_current_span("chat", attributes=ANSWERED):
            pass
    with tracer.start_as_current_span("chat", attributes={**ANSWERED, **bad_attributes}) as bad:
        pass
    partial = _export(client, keys["ingest"], encode_spans(finished.get_finished_spans()))
    assert partial.rejected_spans == 1
    assert f"{request_id(bad)}: {attribute}: " in partial.error_message and reason in partial.error_message
    assert store.scalar("SELECT count() FROM requests") == 100 and request_rows.get(store, request_id(bad)) is None
    [kept] = _rejected(store)
    assert (kept["kind"], kept["field"]) == ("requests", attribute) and reason in kept["reason"]
    assert f"{bad.get_span_context().span_id:016x}" in kept["raw"]  # the span as it was sent, to look into


def test_token_counts_sent_as_whole_doubles_are_counts(recorded, client, keys, store):
    tracer, finished = recorded
    with tracer.start_as_current_span("chat", attributes={**ANSWERED, "gen_ai.usage.input_tokens": 120.0}) as span:
        pass
    assert _export(client, keys["ingest"], encode_spans(finished.get_finished_spans())).rejected_spans == 0
    assert _stored(store, span)["input_tokens"] == 120


def test_a_span_that_ends_before_it_starts_is_rejected(recorded, client, keys, store):
    tracer, finished = recorded
    with tracer.start_as_current_span("chat", attributes=ANSWERED):
        pass
    start = time.time_ns()
    bad = tracer.start_span("chat", attributes=ANSWERED, start_time=start)
    bad.end(end_time=start - 1_000_000)
    partial = _export(client, keys["ingest"], encode_spans(finished.get_finished_spans()))
    assert partial.rejected_spans == 1
    assert f"{request_id(bad)}: end_time_unix_nano: before start_time_unix_nano" in partial.error_message
    assert store.scalar("SELECT count() FROM requests") == 1  # not a request with latency 0
    assert [k["field"] for k in _rejected(store)] == ["end_time_unix_nano"]


def test_the_sdk_exporter_delivers_a_batch_that_holds_a_bad_span(live_server, recorded, keys, store):
    tracer, finished = recorded
    for _ in range(100):
        with tracer.start_as_current_span("chat", attributes=ANSWERED):
            pass
    with tracer.start_as_current_span("chat", attributes={**ANSWERED, "gen_ai.usage.input_tokens": math.inf}):
        pass
    exporter = OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces", headers=auth(keys["ingest"]))
    # A 500 is not retried by the exporters: the 100 good spans were gone with the bad one.
    assert exporter.export(finished.get_finished_spans()).name == "SUCCESS"
    assert store.scalar("SELECT count() FROM requests") == 100
    assert store.scalar("SELECT count() FROM rejected_events") == 1


TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def _any(v) -> AnyValue:
    if isinstance(v, AnyValue):
        return v
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=v)


def _span(trace_id: bytes, span_id: bytes, attributes: dict, start_ns: int | None = None) -> Span:
    start_ns = start_ns or time.time_ns()
    return Span(trace_id=trace_id, span_id=span_id, name="chat", start_time_unix_nano=start_ns,
                end_time_unix_nano=start_ns + 500_000_000,
                attributes=[KeyValue(key=k, value=_any(v)) for k, v in attributes.items()])


def _traces(spans: list[Span], service: AnyValue | str = "copilot") -> ExportTraceServiceRequest:
    resource = ResourceMessage(attributes=[KeyValue(key="service.name", value=_any(service))])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource,
                                                                   scope_spans=[ScopeSpans(spans=spans)])])


def test_spans_with_zero_malformed_or_repeated_ids_are_rejected(client, keys, store, clock):
    clock.set(dt.datetime.now(dt.timezone.utc))
    first, second = bytes.fromhex("00000000000000a1"), bytes.fromhex("00000000000000a2")
    spans = [
        _span(TRACE_ID, first, ANSWERED),
        _span(bytes(16), bytes(8), ANSWERED),  # all-zero ids: "no span" in OTLP
        _span(bytes(16), bytes(8), {**ANSWERED, "gen_ai.usage.input_tokens": 99}),  # another one: not the same request
        _span(TRACE_ID[:3], b"\x01" * 5, ANSWERED),
        _span(b"", b"", ANSWERED),
        _span(TRACE_ID, second, ANSWERED),
        _span(TRACE_ID, second, {**ANSWERED, "gen_ai.usage.input_tokens": 7}),  # the same ids again in this export
    ]
    partial = _export(client, keys["ingest"], _traces(spans))
    assert partial.rejected_spans == 5
    assert "span #1: trace_id: all zero" in partial.error_message
    stored = store.query("SELECT request_id, input_tokens FROM requests FINAL ORDER BY request_id")
    assert stored == [(f"otel-{TRACE_ID.hex()}-{first.hex()}", 12), (f"otel-{TRACE_ID.hex()}-{second.hex()}", 12)]
    reasons = [k["reason"] for k in _rejected(store)]
    assert reasons == ["trace_id: all zero; span_id: all zero"] * 2 + [
        "trace_id: must be 16 bytes, got 3; span_id: must be 8 bytes, got 5",
        "trace_id: must be 16 bytes, got 0; span_id: must be 8 bytes, got 0",
        "span_id: the same trace and span ids as span #5 of this export"]


# Every attribute a span is mapped from, and AnyValues of every kind: each span is stored, parked or rejected
# with a reason, never a 500 (one odd value used to cost the whole export).
MAPPED = ["gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.provider.name",
          "gen_ai.system", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
          "gen_ai.usage.completion_tokens", "gen_ai.usage.cache_read.input_tokens", "gen_ai.conversation.id",
          "user.id", "enduser.id", "nlpmon.feature", "gen_ai.agent.name", "llm.request.type", "error.type",
          "http.response.status_code", "gen_ai.response.time_to_first_chunk", "gen_ai.input.messages",
          "gen_ai.output.messages", "gen_ai.prompt.0.content", "gen_ai.prompt.0.role", "gen_ai.completion.0.content"]
ODD_VALUES = [
    AnyValue(), AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="x")])),
    AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="parts", value=AnyValue(bool_value=True))])),
    AnyValue(bytes_value=b"\x00\xff"), AnyValue(bool_value=False), AnyValue(double_value=-1.5),
    AnyValue(double_value=math.inf), AnyValue(int_value=-(2 ** 63)), AnyValue(string_value='[{"parts": {}}]'),
    AnyValue(string_value='{"role": "user", "content": [3, {"type": "text", "content": {}}]}'),
    AnyValue(string_value="[" * 3000 + "]" * 3000),
]


def test_any_value_of_a_mapped_attribute_gets_an_answer_never_a_500(client, keys, store, clock):
    clock.set(dt.datetime.now(dt.timezone.utc))
    spans = []
    for name in MAPPED:
        for value in ODD_VALUES:
            span_id = (len(spans) + 1).to_bytes(8, "big")
            spans.append(_span(TRACE_ID, span_id, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                   name: value}))
    partial = _export(client, keys["ingest"], _traces(spans))
    stored = store.scalar("SELECT count() FROM requests") + store.scalar(
        "SELECT count() FROM otlp_parts WHERE kind = 'span'")
    assert stored + partial.rejected_spans == len(spans)
    assert store.scalar("SELECT count() FROM rejected_events") == partial.rejected_spans
    for value in ODD_VALUES:  # the resource's attributes too
        assert _post(client, keys["ingest"], _traces([_span(TRACE_ID, b"\x09" * 8, ANSWERED)], value)
                     .SerializeToString(), PROTOBUF).status_code == 200


@pytest.mark.parametrize("path", ["/v1/traces", "/v1/logs"])
@pytest.mark.parametrize("body, says", [
    ('{"resourceSpans": ' + "[" * 5000 + "]" * 5000 + "}", "nest"),
    ('{"resourceSpans": [' + '{"x": [' * 200 + "]}" * 200 + "]}", "nest"),
    ('{"resourceSpans": [{"resource": {"attributes": [{"key": "a\\ud800", "value": {"stringValue": "x"}}]}}]}',
     "surrogate"),
    ('{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "\\udc00"}}]}]}]}', "surrogate"),
    ("5", "JSON object"),
    ("[]", "JSON object"),
    ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}', "hex"),
], ids=["deep-5000", "deep-200", "surrogate-key", "surrogate-value", "number", "array", "bad-hex"])
def test_an_undecodable_otlp_json_body_is_a_400_that_says_why(client, keys, path, body, says):
    r = _post(client, keys["ingest"], body.encode(), "application/json", path=path)
    assert r.status_code == 400 and r.json["error"] == "bad_request"
    assert says in r.json["message"] and "Traceback" not in r.json["message"]


def test_a_gzip_body_of_several_members_is_read_whole(client, keys, store, clock):
    clock.set(dt.datetime.now(dt.timezone.utc))
    # Two serialized export requests one after the other are one request (protobuf merges repeated fields); gzipped
    # as two members, the spans of the second were dropped with a 200.
    spans = [_span(TRACE_ID, bytes([0, 0, 0, 0, 0, 0, 0, i + 1]), ANSWERED) for i in range(4)]
    body = gzip.compress(_traces(spans[:2]).SerializeToString()) + gzip.compress(_traces(spans[2:]).SerializeToString())
    r = _post(client, keys["ingest"], body, PROTOBUF, **{"Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert store.scalar("SELECT count() FROM requests") == 4


def test_an_export_over_the_batch_limit_is_413_and_names_the_setting(make_config, make_store, clock):
    clock.set(dt.datetime.now(dt.timezone.utc))
    cfg = make_config(ingest={"max_rows_per_batch": 20})
    app = create_app(cfg, make_store(cfg), clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    provider = TracerProvider()
    finished = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(finished))
    for _ in range(21):
        with provider.get_tracer("test").start_as_current_span("chat", attributes=ANSWERED):
            pass
    spans = finished.get_finished_spans()
    with LiveServer(app) as server:
        exporter = OTLPSpanExporter(endpoint=f"{server.url}/v1/traces", headers=auth(key))
        assert exporter.export(spans).name == "FAILURE"
    client = app.test_client()
    r = _post(client, key, encode_spans(spans).SerializeToString(), PROTOBUF)
    assert r.status_code == 413 and r.json["error"] == "payload_too_large"
    assert "21 spans" in r.json["message"] and "ingest.max_rows_per_batch (20)" in r.json["message"]
    assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in r.json["message"]
    assert app.extensions["nlpmon"].store.scalar("SELECT count() FROM requests") == 0
    assert _export(client, key, encode_spans(spans[:20])).rejected_spans == 0
    assert app.extensions["nlpmon"].store.scalar("SELECT count() FROM requests") == 20

    logs_provider = LoggerProvider()
    logs = InMemoryLogRecordExporter()
    logs_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    for _ in range(21):
        logs_provider.get_logger("test").emit(event_name="gen_ai.user.message", body={"content": "hi"})
    r = _post(client, key, encode_logs(logs.get_finished_logs()).SerializeToString(), PROTOBUF, path="/v1/logs")
    assert r.status_code == 413 and "21 log records" in r.json["message"]
    assert "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE" in r.json["message"]


def test_one_bad_log_record_is_rejected_alone(recorded, recorded_logs, client, keys, store):
    tracer, spans = recorded
    logger, logs = recorded_logs
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as good:
        pass
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as other:
        pass
    content_events(logger, good)  # records #0-#2
    ctx = trace.set_span_in_context(other)
    logger.emit(event_name="gen_ai.choice", context=ctx,
                body={"index": "abc", "message": {"role": "assistant", "content": "Maybe."}})
    logger.emit(event_name="gen_ai.user.message", context=ctx, body={"role": "user", "parts": 5})
    logger.emit(event_name="gen_ai.evaluation.result", context=ctx,
                attributes={"gen_ai.evaluation.name": "task_success", "gen_ai.evaluation.score.value": "high"})
    logger.emit(event_name="gen_ai.user.message", body={"content": "no span around me"})  # not nlpmon's: no answer
    partial = _export(client, keys["ingest"], encode_logs(logs.get_finished_logs()), path="/v1/logs")
    assert partial.rejected_log_records == 3
    for said in ("log record #3 (gen_ai.choice): body.index: must be an integer, got string",
                 "log record #4 (gen_ai.user.message): body: parts must be an array, got number",
                 "log record #5 (gen_ai.evaluation.result): gen_ai.evaluation.score.value: must be a number"):
        assert said in partial.error_message
    assert [(k["kind"], k["field"]) for k in _rejected(store)] == [
        ("requests", "body.index"), ("requests", "body"), ("feedback", "gen_ai.evaluation.score.value")]
    # The good records were kept for their span: it lands at once, with their texts.
    _export(client, keys["ingest"], encode_spans(spans.get_finished_spans()))
    row = _stored(store, good)
    assert (row["input_text"], row["output_text"]) == ("Is the AI plan on sale?", "Yes, until Friday.")


def test_parked_parts_are_redacted_hashed_and_cut_before_they_wait(otel, app, client, keys, store, clock):
    tracer, logger = otel
    long_answer = "The plan is on sale until Friday. " * 1500  # 51,000 characters; ingest.max_text_chars is 32,768
    with tracer.start_as_current_span("chat", attributes={**NO_CONTENT, "user.id": "jane@example.com"}) as span:
        pass
    content_events(logger, span, question="Mail jane@example.com or call +1 415-555-0132, please.", answer=long_answer)
    parked = store.query("SELECT kind, payload FROM otlp_parts")
    assert {kind for kind, _ in parked} == {"span", "content"}
    waiting = " ".join(payload for _, payload in parked)
    assert "jane@example.com" not in waiting and "555-0132" not in waiting
    assert max(len(json.loads(payload).get("output_text", {}).get("text", "")) for kind, payload in parked
               if kind == "content") == 32_768
    build_jobs(store, app.extensions["nlpmon"].config, clock)["otlp_join"].run(clock.now() + dt.timedelta(seconds=6))
    row = _stored(store, span)
    assert row["input_text"] == "Mail [EMAIL] or call [PHONE], please." and row["pii_detected"] is True
    assert row["output_text"] == long_answer[:32_768] and row["text_truncated"] is True
    # Hashed once, as for events: the same user sent to /v1/requests has the same hash.
    event = request_event("same-user", ts=clock.now().isoformat(), user_id="jane@example.com")
    assert client.post("/v1/requests", json=[event], headers=auth(keys["ingest"])).status_code == 200
    assert request_rows.get(store, "req-same-user").user_id_hash == row["user_id_hash"]


def test_in_reject_mode_a_content_record_over_the_limit_is_rejected_not_parked(make_config, make_store, clock):
    clock.set(dt.datetime.now(dt.timezone.utc))
    cfg = make_config(ingest={"max_text_chars": 100, "text_over_limit": "reject"})
    store = make_store(cfg)
    app = create_app(cfg, store, clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    tracer = TracerProvider().get_tracer("test")
    logs_provider = LoggerProvider()
    logs = InMemoryLogRecordExporter()
    logs_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as span:
        pass
    content_events(logs_provider.get_logger("test"), span, answer="y" * 101)
    partial = _export(app.test_client(), key, encode_logs(logs.get_finished_logs()), path="/v1/logs")
    assert partial.rejected_log_records == 1
    assert "log record #2 (gen_ai.choice): body: longer than 100 characters (101)" in partial.error_message
    assert "y" * 101 not in " ".join(p for (p,) in store.query("SELECT payload FROM otlp_parts"))
    assert [(k["kind"], k["field"]) for k in _rejected(store)] == [("requests", "body")]


def test_parts_parked_before_they_were_sanitized_are_sanitized_when_they_are_joined(app, store, clock):
    # What an earlier version parked as it came: the job must neither crash on it nor store it in clear.
    clock.set(dt.datetime.now(dt.timezone.utc))
    now = clock.now()
    event = {"request_id": "otel-legacy", "ts": now.isoformat(), "service": "s", "feature": "f", "model": "gpt-4o",
             "status": "ok", "latency_ms": 5.0, "user_id": "jane@example.com"}
    otlp_parts.write(store, [("t", "s", "span", "", event, "parked", now),
                             ("t", "s", "content", "c1", {"input_text": "I am jane@example.com", "at": 1}, "", now)])
    assert build_jobs(store, app.extensions["nlpmon"].config, clock)["otlp_join"].run(
        now + dt.timedelta(seconds=6)).rows == 1
    row = request_rows.get(store, "otel-legacy").as_dict()
    assert row["input_text"] == "I am [EMAIL]" and row["pii_detected"] is True
    assert len(row["user_id_hash"]) == 32 and "jane" not in row["user_id_hash"]


def test_any_value_in_a_genai_log_record_gets_an_answer_never_a_500(client, keys, store, clock):
    clock.set(dt.datetime.now(dt.timezone.utc))
    bodies = ODD_VALUES + [_any(json.dumps({"index": v, "message": {"parts": v}})) for v in ("x", 1.5, None, [1])]
    bodies += [AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v)]))
               for k in ("index", "content", "parts", "message", "gen_ai.input.messages") for v in ODD_VALUES]
    records = []
    for name in sorted(genai.CONTENT_EVENTS | {genai.EVALUATION_EVENT}):
        for body in bodies:
            span_id = (len(records) + 1).to_bytes(8, "big")
            records.append(LogRecord(time_unix_nano=time.time_ns(), event_name=name, trace_id=TRACE_ID,
                                     span_id=span_id, body=body, attributes=[
                                         KeyValue(key="gen_ai.evaluation.name",
                                                  value=AnyValue(string_value="relevance")),
                                         KeyValue(key="gen_ai.evaluation.score.value", value=body)]))
    export = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])
    partial = _export(client, keys["ingest"], export, path="/v1/logs")
    assert store.scalar("SELECT count() FROM rejected_events") == partial.rejected_log_records > 0
