"""OTLP/gRPC, driven by the OpenTelemetry SDK's gRPC exporters and opentelemetry-proto's stubs against the
receiver `nlpmon serve` starts (monitor.ingest.otlp_grpc) on a free loopback port: exports land as over HTTP,
through the same code and with the same partial_success, and every refusal has the status code an exporter
acts on (and only UNAVAILABLE, with its RetryInfo, is retried). Late content is counted and said."""
from __future__ import annotations

import datetime as dt
import logging
import socket
import subprocess
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.trace.export import SpanExportResult

from monitor.foundation.clock import ManualClock
from monitor.foundation.config import ConfigError
from monitor.foundation.tables import requests as request_rows
from monitor.ingest import otlp_grpc
from monitor.scheduler import build_jobs
from tests.helpers import app_of_its_own
from tests.otel_records import CURRENT, NO_CONTENT, content_events, recording, request_id

# One worker builds the module's store and receiver once and runs its tests in order.
pytestmark = pytest.mark.xdist_group("otlp_grpc")

MAX_ROWS = 50
RETRY_AFTER = 0.3  # what the receiver's UNAVAILABLE asks for; the exporter's own backoff would be 0.8-1.2 s
EXPORTER_LOG = "opentelemetry.exporter.otlp.proto.grpc.exporter"


class Receiver:
    def __init__(self, app, port: int):
        self.app, self.port = app, port
        self.svc = app.extensions["nlpmon"]
        self.store, self.clock = self.svc.store, self.svc.clock
        self.keys = {scope: self.svc.keys.create(f"grpc-{scope}", [scope])[1] for scope in ("ingest", "read")}
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def metadata(self, scope="ingest") -> tuple:
        return (("authorization", f"Bearer {self.keys[scope]}"),)

    def traces(self, request, **kw):
        return TraceServiceStub(self.channel).Export(request, metadata=kw.pop("metadata", self.metadata()), **kw)

    def logs(self, request, **kw):
        return LogsServiceStub(self.channel).Export(request, metadata=kw.pop("metadata", self.metadata()), **kw)

    def exporter(self, kind=OTLPSpanExporter, key=None, **kw):
        return kind(endpoint=f"http://127.0.0.1:{self.port}", insecure=True,
                    headers={"authorization": f"Bearer {key or self.keys['ingest']}"}, **kw)

    def stored(self, span) -> dict:
        row = request_rows.get(self.store, request_id(span))
        assert row is not None, "span not stored"
        return row.as_dict()

    def join(self, after: float = 6) -> None:
        """The otlp_join job, otlp.logs_wait after now: parked spans land with the content that came."""
        build_jobs(self.store, self.svc.config, self.clock)["otlp_join"].run(
            self.clock.now() + dt.timedelta(seconds=after))


@pytest.fixture(scope="module")
def receiver(chdb_dir):
    clock = ManualClock(dt.datetime.now(dt.timezone.utc))  # the SDK stamps spans with the real time
    with app_of_its_own(chdb_dir, clock, "grpc", ingest={"max_body_bytes": "16MiB",
                                                         "max_rows_per_batch": MAX_ROWS}) as app:
        server, port = otlp_grpc.start(app.extensions["nlpmon"], "127.0.0.1", 0, 4, retry_after=RETRY_AFTER)
        r = Receiver(app, port)
        try:
            yield r
        finally:
            r.channel.close()
            server.stop(None)


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_exports_over_grpc_land_as_over_http_with_the_same_partial_success(receiver):
    tracer, spans, logger, logs = recording()
    with tracer.start_as_current_span("chat", attributes=CURRENT) as good:
        pass
    with tracer.start_as_current_span("chat", attributes={**CURRENT, "gen_ai.usage.output_tokens": -5}) as bad:
        pass
    export = encode_spans(spans.get_finished_spans())
    answer = receiver.traces(export, compression=grpc.Compression.Gzip)
    assert answer.partial_success.rejected_spans == 1
    assert f"{request_id(bad)}: gen_ai.usage.output_tokens: must not be negative" in answer.partial_success.error_message
    # The same export through the HTTP door: the same answer, word for word (the good span is a duplicate now).
    over_http = receiver.app.test_client().post("/v1/traces", data=export.SerializeToString(), headers={
        "Authorization": f"Bearer {receiver.keys['ingest']}", "Content-Type": "application/x-protobuf"})
    assert over_http.status_code == 200
    assert ExportTraceServiceResponse.FromString(over_http.data).partial_success == answer.partial_success
    row = receiver.stored(good)
    assert (row["service"], row["feature"], row["model"], row["input_tokens"], row["output_tokens"], row["input_text"],
            row["output_text"]) == ("support-bot", "answer", "gpt-4o-2024-08-06", 120, 40, "Order 42, placed Monday.",
                                    "It ships tomorrow.")
    assert request_rows.get(receiver.store, request_id(bad)) is None
    assert receiver.store.scalar("SELECT count() FROM rejected_events") == 2  # kept once per door it came through

    # Content as log records through the SDK's gRPC exporters, gzip: the span waits for them and lands with them.
    spans.clear()
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as waiting:
        pass
    content_events(logger, waiting, question="Can I pay by card?", answer="Yes, every major card.")
    assert receiver.exporter(compression=grpc.Compression.Gzip).export(spans.get_finished_spans()) \
        == SpanExportResult.SUCCESS
    assert receiver.exporter(OTLPLogExporter, compression=grpc.Compression.Gzip).export(
        logs.get_finished_logs()).name == "SUCCESS"
    receiver.join()
    row = receiver.stored(waiting)
    assert (row["input_text"], row["output_text"], row["input_tokens"]) == ("Can I pay by card?",
                                                                            "Yes, every major card.", 120)


def test_each_refusal_has_the_status_an_exporter_acts_on(receiver, caplog):
    tracer, spans, _, _ = recording()
    with tracer.start_as_current_span("chat", attributes=CURRENT):
        pass
    export = encode_spans(spans.get_finished_spans())
    code, said = _code(lambda: receiver.traces(export, metadata=()))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in said
    assert _code(lambda: receiver.traces(export, metadata=(("authorization", "Bearer nlpm_0123456789ab_"
                                                            + "x" * 32),)))[0] == grpc.StatusCode.UNAUTHENTICATED
    code, said = _code(lambda: receiver.traces(export, metadata=receiver.metadata("read")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'ingest' scope" in said
    # The SDK's exporter with a wrong key: no retry, a failed export, and a log line naming the status.
    with caplog.at_level(logging.ERROR, logger=EXPORTER_LOG):
        started = time.monotonic()
        assert receiver.exporter(key="nlpm_0123456789ab_" + "y" * 32).export(
            spans.get_finished_spans()) == SpanExportResult.FAILURE
    assert time.monotonic() - started < 2
    assert any("StatusCode.UNAUTHENTICATED" in r.getMessage() and "invalid or revoked API key" in r.getMessage()
               for r in caplog.records)
    # Not an export (HTTP's 400): INVALID_ARGUMENT with the reason, not the INTERNAL of a broken server.
    raw = receiver.channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    code, said = _code(lambda: raw(b"\xff\xff\xff not protobuf", metadata=receiver.metadata()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid ExportTraceServiceRequest" in said
    # Over ingest.max_rows_per_batch, or over ingest.max_body_bytes (16 MiB here), plain or gzip: HTTP's 413.
    for _ in range(MAX_ROWS):
        with tracer.start_as_current_span("chat", attributes=CURRENT):
            pass
    code, said = _code(lambda: receiver.traces(encode_spans(spans.get_finished_spans())))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and f"ingest.max_rows_per_batch ({MAX_ROWS})" in said
    export.resource_spans[0].scope_spans[0].spans[0].attributes.append(
        KeyValue(key="app.blob", value=AnyValue(string_value="x" * 20_000_000)))
    code, said = _code(lambda: receiver.traces(export))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and f"vs. {16 * 2**20})" in said, said
    code, said = _code(lambda: receiver.traces(export, compression=grpc.Compression.Gzip))  # 20 kB on the wire
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "Decompressed message larger than max" in said
    # Metrics, which an SDK set up by environment variables alone sends too, are not nlpmon's: it says what to do.
    metrics = receiver.channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
    code, said = _code(lambda: metrics(b"", metadata=()))
    assert code == grpc.StatusCode.UNIMPLEMENTED and "OTEL_METRICS_EXPORTER=none" in said


def test_a_store_that_is_down_is_unavailable_with_retry_info_and_the_exporter_retries(receiver, caplog):
    tracer, spans, _, _ = recording()
    with tracer.start_as_current_span("chat", attributes=CURRENT) as span:
        pass
    receiver.store.command("DETACH TABLE requests")
    results = []
    try:
        with pytest.raises(grpc.RpcError) as err:
            receiver.traces(encode_spans(spans.get_finished_spans()))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "retry later" in err.value.details()
        retry = error_details_pb2.RetryInfo()
        assert rpc_status.from_call(err.value).details[0].Unpack(retry)  # as the Go SDK and the Collector read it
        assert retry.retry_delay.ToMilliseconds() == RETRY_AFTER * 1000
        with caplog.at_level(logging.WARNING, logger=EXPORTER_LOG):
            sender = threading.Thread(target=lambda: results.append(receiver.exporter().export(
                spans.get_finished_spans())))
            sender.start()
            deadline = time.monotonic() + 10
            while not any("Transient error StatusCode.UNAVAILABLE" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the exporter never heard UNAVAILABLE"
                time.sleep(0.05)
    finally:
        receiver.store.command("ATTACH TABLE requests")
    sender.join(15)
    assert results == [SpanExportResult.SUCCESS]
    # It waited what the receiver asked for (its own backoff would say 0.8-1.2 s).
    assert any(f"retrying in {RETRY_AFTER:.2f}s" in r.getMessage() for r in caplog.records)
    assert receiver.stored(span)["input_tokens"] == 120


def test_a_query_the_store_rejects_is_internal_with_a_reference_in_the_log(receiver, caplog):
    tracer, spans, _, _ = recording()
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT):  # it would be parked in otlp_parts
        pass
    receiver.store.command("ALTER TABLE otlp_parts RENAME COLUMN payload TO p")
    try:
        with caplog.at_level(logging.ERROR, logger="monitor.ingest.otlp_grpc"):
            code, said = _code(lambda: receiver.traces(encode_spans(spans.get_finished_spans())))
    finally:
        receiver.store.command("ALTER TABLE otlp_parts RENAME COLUMN p TO payload")
    assert code == grpc.StatusCode.INTERNAL and "not an outage" in said and "Traceback" not in said
    reference = said.rpartition("reference ")[2].rstrip(")")
    assert any(reference in r.getMessage() and "payload" in r.getMessage() for r in caplog.records)


def test_content_after_its_request_was_stored_is_counted_and_said_once_a_minute(receiver, caplog):
    tracer, spans, logger, logs = recording()
    with tracer.start_as_current_span("chat", attributes=NO_CONTENT) as late:
        pass
    with tracer.start_as_current_span("chat", attributes=CURRENT) as whole:  # its texts came on the span
        pass
    receiver.traces(encode_spans(spans.get_finished_spans()))
    receiver.join()  # otlp.logs_wait passed: stored without texts
    assert receiver.stored(late)["input_text"] == ""
    counters = receiver.svc.ingestor.counters
    before = counters["otlp_late_content"]
    content_events(logger, late)
    content_events(logger, whole)  # nothing it could have added: not late, just redundant
    export = encode_logs(logs.get_finished_logs())
    with caplog.at_level(logging.WARNING, logger="monitor.ingest.otlp_join"):
        for _ in range(2):
            assert receiver.logs(export).partial_success.rejected_log_records == 0
        receiver.clock.advance(dt.timedelta(seconds=61))
        receiver.logs(export)
    assert counters["otlp_late_content"] - before == 9  # three records, three times
    said = [r.getMessage() for r in caplog.records if "after their span was stored" in r.getMessage()]
    assert len(said) == 2 and "raise otlp.logs_wait" in said[0] and "(5s)" in said[0]
    assert receiver.stored(late)["input_text"] == ""  # a stored request never changes
    metrics = receiver.app.test_client().get("/metrics", headers={"Authorization": f"Bearer {receiver.keys['read']}"})
    assert f"nlpmon_otlp_late_content_total {float(counters['otlp_late_content'])}" in metrics.get_data(as_text=True)


def test_tls(receiver, tmp_path):
    def pair(name):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", tmp_path / f"{name}.key", "-out", tmp_path / f"{name}.pem"],
                       check=True, capture_output=True)
        return str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key")
    cert, key = pair("a")
    other_cert, _ = pair("b")
    with pytest.raises(ConfigError, match="otlp.grpc_tls_cert.*otlp.grpc_tls_key.*not a PEM certificate chain"):
        otlp_grpc.start(receiver.svc, "127.0.0.1", 0, 1, tls=(other_cert, key))
    with pytest.raises(ConfigError, match="config key 'otlp.grpc_tls_key': cannot read"):
        otlp_grpc.start(receiver.svc, "127.0.0.1", 0, 1, tls=(cert, str(tmp_path / "missing.key")))
    server, port = otlp_grpc.start(receiver.svc, "127.0.0.1", 0, 1, tls=(cert, key))
    try:
        tracer, spans, _, _ = recording()
        with tracer.start_as_current_span("chat", attributes=CURRENT) as span:
            pass
        with open(cert, "rb") as f:
            trusted = grpc.ssl_channel_credentials(f.read())
        exporter = OTLPSpanExporter(endpoint=f"https://127.0.0.1:{port}", credentials=trusted,
                                    headers={"authorization": f"Bearer {receiver.keys['ingest']}"})
        assert exporter.export(spans.get_finished_spans()) == SpanExportResult.SUCCESS
        assert receiver.stored(span)["output_tokens"] == 40
        # The port it took is its own: a second server cannot share it and take half the traffic.
        with pytest.raises(ConfigError, match=f"config key 'otlp.grpc_port': cannot listen on 127.0.0.1:{port}"):
            otlp_grpc.start(receiver.svc, "127.0.0.1", port, 1)
    finally:
        server.stop(None)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # stopped
