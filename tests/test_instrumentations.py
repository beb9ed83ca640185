"""The instrumentations teams run, for real: the real OpenAI client calls an OpenAI-compatible chat-completions
server on loopback (one call answered, one refused with a 429), instrumented as a team instruments it, and the
stored requests are checked field by field.

- The official openai-v2 instrumentation, zero-code: an unmodified app run under ``opentelemetry-instrument``
  (opentelemetry-distro, opentelemetry-exporter-otlp) with only OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT
  and OTEL_EXPORTER_OTLP_HEADERS set (and content capture on), so it exports over gRPC, texts as log records.
- OpenLLMetry's opentelemetry-instrumentation-openai, in code, over OTLP/HTTP, texts as span attributes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from monitor.foundation.clock import ManualClock
from monitor.foundation.tables import requests as request_rows
from monitor.ingest import otlp_grpc
from monitor.scheduler import build_jobs
from tests.helpers import LiveServer, ServerThread, app_of_its_own

pytestmark = pytest.mark.xdist_group("instrumentations")

REFUSED = "Please refuse me."


class ChatCompletions(ServerThread):
    """An OpenAI-compatible /v1/chat/completions: the answer to the last user message, with token counts made
    of its words; a 429 for REFUSED, marked not to be retried, as OpenAI marks a hard quota."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
                if question == REFUSED:
                    self._send(429, {"error": {"message": "You exceeded your current quota.",
                                               "type": "insufficient_quota", "code": "insufficient_quota"}},
                               {"x-should-retry": "false"})
                    return
                answer = f"About '{question}': it ships tomorrow."
                self._send(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1_764_000_000,
                    "model": f"{body['model']}-2024-07-18",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": 10 * len(question.split()), "completion_tokens": len(answer.split()),
                              "total_tokens": 10 * len(question.split()) + len(answer.split())}})

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                    **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


class Served:
    def __init__(self, app, grpc_port: int, http_url: str, openai_url: str):
        self.app, self.grpc_port, self.http_url, self.openai_url = app, grpc_port, http_url, openai_url
        self.svc = app.extensions["nlpmon"]
        self.key = self.svc.keys.create("instrumented-app", ["ingest"])[1]

    def requests_of(self, service: str) -> list[dict]:
        """The service's stored requests, oldest first, after otlp.logs_wait (parked spans joined)."""
        build_jobs(self.svc.store, self.svc.config, self.svc.clock)["otlp_join"].run(
            self.svc.clock.now() + dt.timedelta(seconds=6))
        ids = self.svc.store.query("SELECT request_id FROM requests WHERE service = {s:String} ORDER BY ts",
                                   {"s": service})
        return [request_rows.get(self.svc.store, i).as_dict() for (i,) in ids]

    def overview(self) -> str:
        """The overview page as a manager signed in with a read key sees it."""
        client = self.app.test_client()
        login = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
        key = self.svc.keys.create("manager", ["read"])[1]
        assert client.post("/login", data={"csrf_token": token, "api_key": key}).status_code == 302
        answer = client.get("/?period=24h")
        assert answer.status_code == 200
        return answer.get_data(as_text=True)


@pytest.fixture(scope="module")
def served(chdb_dir):
    clock = ManualClock(dt.datetime.now(dt.timezone.utc))  # the SDK stamps spans with the real time
    with app_of_its_own(chdb_dir, clock, "instr") as app, ChatCompletions() as openai_server, \
            LiveServer(app) as http:
        server, port = otlp_grpc.start(app.extensions["nlpmon"], "127.0.0.1", 0, 4)
        try:
            yield Served(app, port, http.url, openai_server.url)
        finally:
            server.stop(None)


APP = f'''
from openai import OpenAI

client = OpenAI()
answer = client.chat.completions.create(model="gpt-4o-mini", messages=[
    {{"role": "system", "content": "Answer in one line."}}, {{"role": "user", "content": "Where is my parcel?"}}])
print(answer.choices[0].message.content)
try:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "{REFUSED}"}}])
except Exception as exc:
    print("refused:", type(exc).__name__)
'''


def _only_one_openai_instrumentation(tmp_path: Path) -> str:
    """A directory that, first on PYTHONPATH, hides OpenLLMetry's auto-instrumentation entry point from the app,
    as if only openai-v2 were installed (as in a team's environment; this suite has both).

    Both packages register their instrumentor under the same entry-point name, ``openai``, so
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=openai turns both off and cannot choose. importlib.metadata reads the
    first distribution of a name on sys.path, so metadata of the same name without entry points hides it."""
    dist = tmp_path / "hide" / "opentelemetry_instrumentation_openai-0.62.4.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: opentelemetry-instrumentation-openai\n"
                                   "Version: 0.62.4\n")
    return str(dist.parent)


def test_zero_code_openai_v2_over_grpc_with_content_as_log_records(served, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MONITOR_", "OPENAI_"))}
    env.update({
        # What a team sets: the service, where nlpmon's gRPC port is, the key; and content capture, for texts.
        "OTEL_SERVICE_NAME": "parcel-bot",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{served.grpc_port}",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {served.key}",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        # The app's own settings: where its model is.
        "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": served.openai_url,
        "PYTHONPATH": _only_one_openai_instrumentation(tmp_path)})
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    run = subprocess.run([str(instrument), sys.executable, "app.py"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == ["About 'Where is my parcel?': it ships tomorrow.", "refused: RateLimitError"]
    # Spans and log records went through; the one refusal the app's log shows says what to do about metrics.
    assert "Failed to export traces" not in run.stderr and "Failed to export logs" not in run.stderr, run.stderr
    assert "OTEL_METRICS_EXPORTER=none" in run.stderr

    answered, refused = served.requests_of("parcel-bot")
    assert {k: answered[k] for k in ("service", "feature", "model", "provider", "status", "error_type",
                                     "input_tokens", "output_tokens", "input_text", "output_text")} == {
        "service": "parcel-bot", "feature": "chat", "model": "gpt-4o-mini-2024-07-18", "provider": "openai",
        "status": "ok", "error_type": "", "input_tokens": 40, "output_tokens": 8,
        "input_text": "Where is my parcel?", "output_text": "About 'Where is my parcel?': it ships tomorrow."}
    assert answered["cost_usd"] > 0 and answered["latency_ms"] > 0
    assert {k: refused[k] for k in ("service", "model", "status", "error_type", "input_tokens", "output_tokens",
                                    "input_text", "output_text")} == {
        "service": "parcel-bot", "model": "gpt-4o-mini", "status": "error", "error_type": "RateLimitError",
        "input_tokens": 0, "output_tokens": 0, "input_text": REFUSED, "output_text": ""}
    # The overview shows the app's calls: two requests, one an error.
    served.svc.clock.set(dt.datetime.now(dt.timezone.utc))
    page = served.overview()
    row = re.search(r'<tr[^>]*data-service="parcel-bot"[^>]*>.*?</tr>', page, re.S)
    kpi = {k: v for k, v in re.findall(r'data-kpi="(\w+)">\s*<a [^>]*class="value"[^>]*>([^<]*)<', row.group(0))}
    assert kpi["requests"] == "2" and kpi["error_rate"] == "50.00%" and kpi["cost_per_request_usd"].startswith("$")


def test_openllmetry_over_http_with_content_as_span_attributes(served):
    import openai
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "llmetry-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"{served.http_url}/v1/traces", headers={"Authorization": f"Bearer {served.key}"})))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(api_key="sk-test", base_url=served.openai_url)
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Is it waterproof?"}])
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": REFUSED}])
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    answered, refused = served.requests_of("llmetry-bot")
    assert {k: answered[k] for k in ("service", "feature", "model", "provider", "status", "input_tokens",
                                     "output_tokens", "input_text", "output_text")} == {
        "service": "llmetry-bot", "feature": "chat", "model": "gpt-4o-2024-07-18", "provider": "openai",
        "status": "ok", "input_tokens": 30, "output_tokens": 7, "input_text": "Is it waterproof?",
        "output_text": "About 'Is it waterproof?': it ships tomorrow."}
    assert {k: refused[k] for k in ("service", "model", "status", "error_type", "input_text", "output_text")} == {
        "service": "llmetry-bot", "model": "gpt-4o", "status": "error", "error_type": "RateLimitError",
        "input_text": REFUSED, "output_text": ""}
