"""GenAI spans and content log records as instrumentations send them, shared by the OTLP tests."""
from __future__ import annotations

import json

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
NO_CONTENT = {k: v for k, v in CURRENT.items() if not k.endswith(".messages")}


def content_events(logger, span, question="Is the AI plan on sale?", answer="Yes, until Friday."):
    """Three content events on ``span`` as the openai-v2 instrumentation sends them: two questions (the newer
    is the one answered) and the answer."""
    ctx = trace.set_span_in_context(span)
    logger.emit(event_name="gen_ai.user.message", body={"content": "an earlier question"}, context=ctx)
    logger.emit(event_name="gen_ai.user.message", body={"content": question}, context=ctx)
    logger.emit(event_name="gen_ai.choice", context=ctx,
                body={"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}})


def request_id(span) -> str:
    ctx = span.get_span_context()
    return f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}"


def recording(service: str = "support-bot"):
    """A tracer and a logger whose finished spans and records wait in memory, to be sent in one export as a
    batch processor sends them: (tracer, finished spans, logger, finished log records)."""
    resource = Resource.create({"service.name": service})
    tracer_provider, spans = TracerProvider(resource=resource), InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider, logs = LoggerProvider(resource=resource), InMemoryLogRecordExporter()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return tracer_provider.get_tracer("test"), spans, logger_provider.get_logger("test"), logs
