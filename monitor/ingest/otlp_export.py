"""One ingest pipeline, two front doors: an OTLP export, however it came (POST /v1/traces and /v1/logs, or
OTLP/gRPC's TraceService and LogsService, see otlp_grpc), is checked and ingested here, so the doors cannot
drift apart. Each returns what the answer's ``partial_success`` says: how many records were rejected, and why.

``svc`` is the app's services (config, ingestor, otlp): the doors hand over what they were built with.
"""
from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from monitor.ingest import genai, otlp
from monitor.ingest.pipeline import IngestResult


def export_traces(svc, export: ExportTraceServiceRequest, api_key_id: str) -> tuple[int, str]:
    """GenAI model-call spans become requests through the same pipeline as /v1/requests; other spans are
    counted and ignored, never rejected. Each span is checked on its own: a bad one is rejected (and kept in
    rejected_events), the others land. ApiError 413 over ``ingest.max_rows_per_batch`` spans."""
    otlp.check_spans(export, svc.config.ingest.max_rows_per_batch)
    spans, labels, ignored = genai.model_calls(export, svc.config.otlp.feature_attributes)
    svc.ingestor.counters["otlp_spans_ignored"] += ignored
    result = svc.otlp.spans(spans, api_key_id=api_key_id) if spans else IngestResult()
    return result.rejected, otlp.error_message(result.errors, labels)


def export_logs(svc, export: ExportLogsServiceRequest, api_key_id: str) -> tuple[int, str]:
    """GenAI content events join their span's request; evaluation results become feedback. Each record is
    checked on its own, as spans are. ApiError 413 over ``ingest.max_rows_per_batch`` log records."""
    otlp.check_log_records(export, svc.config.ingest.max_rows_per_batch)
    contents, content_labels, evaluations, evaluation_labels = genai.log_events(export,
                                                                                svc.config.otlp.evaluation_kinds)
    refused = svc.otlp.contents(contents, api_key_id=api_key_id)
    rated = svc.ingestor.ingest("feedback", evaluations, api_key_id=api_key_id) if evaluations else IngestResult()
    message = "; ".join(m for m in (otlp.error_message(refused.errors, content_labels),
                                    otlp.error_message(rated.errors, evaluation_labels)) if m)
    return refused.rejected + rated.rejected, message
