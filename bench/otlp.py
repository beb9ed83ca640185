"""OTLP ingest throughput: spans/s over OTLP/HTTP and OTLP/gRPC beside events/s through POST /v1/requests.

    .venv/bin/python bench/otlp.py [--calls 12288] [--rounds 6] [--batch 512] [--senders 2] [--profile]

Starts `nlpmon serve` on the embedded store in a temporary directory (a real
separate process, as in bench/ingest.py) with OTLP/gRPC on a free port
(MONITOR_OTLP_GRPC_PORT) and sends the same model calls three ways, in the same
run, to the same server:

- /v1/traces: each demo request event (monitor.demo.generate) as an OTLP GenAI
  chat span with the current semantic-convention attributes (gen_ai.operation.name,
  gen_ai.provider.name, gen_ai.request.model, gen_ai.usage.input_tokens /
  output_tokens, gen_ai.input.messages / gen_ai.output.messages as JSON strings
  holding the event's input_text / output_text, nlpmon.feature, plus
  gen_ai.conversation.id, user.id and error.type with an ERROR status for failed
  calls), service.name and deployment.environment.name as resource attributes;
  batches of 512 spans as the SDK's BatchSpanProcessor sends them, built with the
  opentelemetry-proto classes into one ExportTraceServiceRequest (one
  ResourceSpans per service in the batch, as a collector forwards them) and
  serialized to protobuf before the timing starts;
- gRPC TraceService/Export: the same serialized ExportTraceServiceRequests (fresh
  ids too) sent as they are with grpcio, one channel per sender, the key in the
  ``authorization`` metadata as the SDK's OTLPSpanExporter sends it;
- /v1/requests: the same events as JSON arrays of 512 (all the demo's fields,
  context_text and tags included, which spans do not carry).

The order of the three paths rotates from round to round over ``--rounds``
rounds (each path first in every third round), each round with fresh trace, span
and request ids so deduplication never short-circuits, ``--senders`` concurrent
senders on each path. Every answer is checked (200 or OK, nothing rejected in
partial_success) and afterwards the stored rows are counted per path and one
span's row from each traces path compared with its event.

The HTTP senders use urllib, a new connection per request; a gRPC channel keeps
one HTTP/2 connection, as the exporters do. Prints the three rates per round and
overall, the ratios gRPC / events (the target: >= 0.8) and HTTP traces / events
(>= 0.7), the server's peak RSS and, after the server stops, the server-side
cost of one batch of each HTTP path measured in-process (create_app on the same store,
the Flask test client): body parse (otlp.parse_traces / api.parse_batch), span ->
event mapping (genai.request_event), the ingest pipeline (Ingestor.ingest) and the
rest of the request (auth, Flask, the view's own work, the answer).
``--profile`` adds a cProfile of one /v1/traces batch.
Nothing fails on a missed target. The temporary store is deleted at the end.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import grpc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status  # noqa: E402

from bench.common import peak_rss_mib, run_summary, wait_ready  # noqa: E402
from bench.ingest import cli, free_port, make_events  # noqa: E402

TARGET = 0.7  # HTTP traces / events
TARGET_GRPC = 0.8  # gRPC traces / events (the issue's)
PROTOBUF = "application/x-protobuf"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PATHS = ("traces", "grpc", "requests")
LABELS = {"traces": "POST /v1/traces", "grpc": "gRPC Export", "requests": "POST /v1/requests"}


# -- the two bodies of the same calls -----------------------------------------------------------------
def _unix_nano(ts: str) -> int:
    t = dt.datetime.fromisoformat(ts)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _put(span_or_resource, key: str, v) -> None:
    kv = span_or_resource.attributes.add(key=key)
    if isinstance(v, bool):
        kv.value.bool_value = v
    elif isinstance(v, int):
        kv.value.int_value = v
    elif isinstance(v, float):
        kv.value.double_value = v
    else:
        kv.value.string_value = v


def fill_span(span, ev: dict, trace_id: bytes, span_id: bytes) -> None:
    """``span`` (an empty opentelemetry.proto Span) as the GenAI chat span of demo event ``ev``."""
    start = _unix_nano(ev["ts"])
    span.trace_id, span.span_id = trace_id, span_id
    span.name = f"chat {ev['model']}"
    span.kind = Span.SPAN_KIND_CLIENT
    span.start_time_unix_nano = start
    span.end_time_unix_nano = start + int(ev["latency_ms"] * 1e6)
    _put(span, "gen_ai.operation.name", "chat")
    _put(span, "gen_ai.provider.name", ev["provider"])
    _put(span, "gen_ai.request.model", ev["model"])
    _put(span, "gen_ai.usage.input_tokens", ev["input_tokens"])
    _put(span, "gen_ai.usage.output_tokens", ev["output_tokens"])
    if ev.get("cached_input_tokens"):
        _put(span, "gen_ai.usage.cache_read.input_tokens", ev["cached_input_tokens"])
    if ev.get("input_text"):
        _put(span, "gen_ai.input.messages", json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": ev["input_text"]}]}], ensure_ascii=False))
    if ev.get("output_text"):
        _put(span, "gen_ai.output.messages", json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": ev["output_text"]}],
              "finish_reason": "stop"}], ensure_ascii=False))
    _put(span, "nlpmon.feature", ev["feature"])
    if ev.get("session_id"):
        _put(span, "gen_ai.conversation.id", ev["session_id"])
    if ev.get("user_id"):
        _put(span, "user.id", ev["user_id"])
    if ev["status"] != "ok":
        _put(span, "error.type", ev.get("error_type") or ev["status"])
        span.status.code = Status.STATUS_CODE_ERROR


def traces_bodies(events: list[dict], batch: int, rng: random.Random) -> tuple[list[bytes], list[str]]:
    """Protobuf ExportTraceServiceRequests of ``batch`` spans with fresh ids, and the request ids they map to."""
    bodies, ids = [], []
    for i in range(0, len(events), batch):
        export = ExportTraceServiceRequest()
        scopes = {}
        for ev in events[i:i + batch]:
            resource = (ev["service"], ev["environment"])
            if resource not in scopes:
                rs = export.resource_spans.add()
                _put(rs.resource, "service.name", ev["service"])
                _put(rs.resource, "deployment.environment.name", ev["environment"])
                scope = rs.scope_spans.add()
                scope.scope.name, scope.scope.version = "opentelemetry.instrumentation.openai_v2", "2.1b0"
                scopes[resource] = scope
            trace_id, span_id = rng.randbytes(16), rng.randbytes(8)
            fill_span(scopes[resource].spans.add(), ev, trace_id, span_id)
            ids.append(f"otel-{trace_id.hex()}-{span_id.hex()}")
        bodies.append(export.SerializeToString())
    return bodies, ids


def events_bodies(events: list[dict], batch: int) -> tuple[list[bytes], list[str]]:
    """JSON arrays of ``batch`` events with fresh request ids, and those ids."""
    bodies, ids = [], []
    for i in range(0, len(events), batch):
        rows = [{**ev, "request_id": str(uuid.uuid4())} for ev in events[i:i + batch]]
        ids.extend(r["request_id"] for r in rows)
        bodies.append(json.dumps(rows).encode())
    return bodies, ids


# -- HTTP ---------------------------------------------------------------------------------------------
def post_traces(url: str, key: str, body: bytes) -> int:
    """Spans of one export the answer says were rejected (its partial_success)."""
    req = urllib.request.Request(f"{url}/v1/traces", data=body, method="POST",
                                 headers={"Content-Type": PROTOBUF, "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200 and r.headers.get_content_type() == PROTOBUF, (r.status, r.headers)
        return ExportTraceServiceResponse.FromString(r.read()).partial_success.rejected_spans


def post_requests(url: str, key: str, body: bytes) -> int:
    """Events of one batch rejected; none may be a duplicate (the ids are fresh)."""
    req = urllib.request.Request(f"{url}/v1/requests", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        answer = json.loads(r.read())
    assert answer["duplicates"] == 0, answer
    return answer["rejected"]


def get_json(url: str, key: str, path: str) -> dict:
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


# -- gRPC ---------------------------------------------------------------------------------------------
def grpc_exporter(address: str, key: str):
    """The channel and a function sending one serialized export on it, giving the spans it says were rejected.
    The body goes out as it is (no request serializer): it was serialized before the timing, as for HTTP."""
    channel = grpc.insecure_channel(address)
    export = channel.unary_unary(EXPORT, request_serializer=None,
                                 response_deserializer=ExportTraceServiceResponse.FromString)
    metadata = (("authorization", f"Bearer {key}"),)

    def post(body: bytes) -> int:
        return export(body, metadata=metadata, timeout=120).partial_success.rejected_spans
    return channel, post


def send(posts: list, bodies: list[bytes]) -> tuple[float, int]:
    """Seconds to send all ``bodies`` with one concurrent sender per function of ``posts`` (each takes the next
    body not yet sent, so a gRPC sender keeps its own channel), and how many rows were rejected."""
    todo, lock = iter(bodies), threading.Lock()

    def sender(post) -> int:
        rejected = 0
        while True:
            with lock:
                body = next(todo, None)
            if body is None:
                return rejected
            rejected += post(body)
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(len(posts)) as pool:
        rejected = sum(pool.map(sender, posts))
    return time.perf_counter() - t0, rejected


# -- in-process cost split ----------------------------------------------------------------------------
class Timers:
    """Wraps module attributes the views look up at call time, adding up the seconds spent in each."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self._undo = []

    def wrap(self, owner, attr: str, label: str) -> None:
        inner = getattr(owner, attr)
        spent = self.spent

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0
        setattr(owner, attr, timed)
        self._undo.append((owner, attr, inner))

    def reset(self) -> None:
        self.spent.clear()

    def undo(self) -> None:
        for owner, attr, inner in reversed(self._undo):
            setattr(owner, attr, inner)


def cost_split(cfg, store, ingest_key: str, events: list[dict], batch: int, repeat: int, profile: bool) -> None:
    from monitor.app import create_app
    from monitor.ingest import api, genai, otlp
    from monitor.ingest.pipeline import Ingestor

    app = create_app(cfg, store)
    client = app.test_client()
    rng = random.Random(7)
    one = events[:batch]
    auth = {"Authorization": f"Bearer {ingest_key}"}

    def traces_body():
        return traces_bodies(one, batch, rng)[0][0]

    def events_body():
        return events_bodies(one, batch)[0][0]

    # Warm-up (the ingestor, the key cache, first parts), then the timed batches.
    assert client.post("/v1/traces", data=traces_body(), headers={**auth, "Content-Type": PROTOBUF}).status_code == 200
    assert client.post("/v1/requests", data=events_body(),
                       headers={**auth, "Content-Type": "application/json"}).status_code == 200
    timers = Timers()
    timers.wrap(otlp, "parse_traces", "parse")
    timers.wrap(genai, "request_event", "map")
    timers.wrap(api, "parse_batch", "parse")
    timers.wrap(Ingestor, "ingest", "ingest")
    rows = {}
    try:
        for path, make, ctype in (("/v1/traces", traces_body, PROTOBUF), ("/v1/requests", events_body,
                                                                          "application/json")):
            samples = []
            for _ in range(repeat):
                body = make()
                timers.reset()
                t0 = time.perf_counter()
                r = client.post(path, data=body, headers={**auth, "Content-Type": ctype})
                total = time.perf_counter() - t0
                assert r.status_code == 200, (path, r.status_code, r.data[:300])
                s = dict(timers.spent)
                s["total"] = total
                s["rest"] = total - sum(s.get(k, 0.0) for k in ("parse", "map", "ingest"))
                samples.append(s)
            rows[path] = {k: statistics.median(s.get(k, 0.0) for s in samples)
                          for k in ("parse", "map", "ingest", "rest", "total")}
    finally:
        timers.undo()

    n = len(one)
    print(f"\nserver-side cost of one batch of {n}, in-process (Flask test client on the same store), "
          f"median of {repeat}:")
    print(f"  {'':14} {'parse':>9} {'map':>9} {'ingest':>9} {'rest':>9} {'total':>9}   per row")
    for path, r in rows.items():
        cells = [f"{r[k] * 1000:7.1f}ms" if r[k] or k != "map" else f"{'-':>9}"
                 for k in ("parse", "map", "ingest", "rest", "total")]
        print(f"  {path:14} " + " ".join(cells) + f"   {r['total'] / n * 1e6:6.0f} us")
    t, e = rows["/v1/traces"], rows["/v1/requests"]
    print(f"  /v1/traces protobuf parse + mapping = {(t['parse'] + t['map']) * 1000:.1f} ms "
          f"({(t['parse'] + t['map']) / t['total']:.0%} of its request), ingest {t['ingest'] / t['total']:.0%}; "
          f"/v1/requests JSON parse {e['parse'] * 1000:.1f} ms ({e['parse'] / e['total']:.0%}), "
          f"ingest {e['ingest'] / e['total']:.0%}")
    if profile:
        import cProfile
        import io
        import pstats
        body = traces_body()
        prof = cProfile.Profile()
        prof.enable()
        client.post("/v1/traces", data=body, headers={**auth, "Content-Type": PROTOBUF})
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
        print("\ncProfile of one /v1/traces batch (cumulative):")
        print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


# -- main ---------------------------------------------------------------------------------------------
def check_row(url: str, read_key: str, sample: tuple[str, dict], path: str) -> None:
    """The stored row of span ``sample`` (its request id, its event) holds the event's fields."""
    request_id, ev = sample
    row = get_json(url, read_key, f"/v1/requests/{request_id}")["request"]
    same = {k: (row[k], ev[k]) for k in ("service", "environment", "feature", "model", "provider",
                                         "input_tokens", "output_tokens", "input_text", "output_text")}
    differ = {k: v for k, v in same.items() if v[0] != v[1]}
    assert not differ, f"{LABELS[path]}: the span's row differs from its event: {differ}"


def main() -> None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=12_288, help="model calls sent each way in each round")
    ap.add_argument("--rounds", type=int, default=6,
                    help="rounds, rotating the order of the three paths (a multiple of 3 puts each path "
                         "in each place equally often)")
    ap.add_argument("--batch", type=int, default=512, help="spans (events) per request")
    ap.add_argument("--senders", type=int, default=2, help="concurrent senders on each path")
    ap.add_argument("--split-repeat", type=int, default=5, help="batches per path timed in-process")
    ap.add_argument("--profile", action="store_true", help="cProfile one /v1/traces batch in-process")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="nlpmon-bench-otlp-")
    port, grpc_port = free_port(), free_port()
    while grpc_port == port:  # each port was free once its probe closed; both may be the same one
        grpc_port = free_port()
    env = {**os.environ, "MONITOR_CLICKHOUSE_URL": "chdb://./var/clickhouse", "DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1", "MONITOR_LOGGING_LEVEL": "WARNING", "MONITOR_OTLP_GRPC_PORT": str(grpc_port)}
    env.pop("MONITOR_CONFIG", None)
    try:
        print(f"preparing {args.calls} demo events ...", flush=True)
        events = make_events(args.calls)
        rng = random.Random(11)
        probe_t, _ = traces_bodies(events, args.batch, rng)
        probe_e, _ = events_bodies(events, args.batch)
        no_text = sum(1 for ev in events if not (ev.get("input_text") or ev.get("output_text")))
        print(f"{len(events)} calls a round, {args.rounds} rounds, batches of {args.batch}: "
              f"{sum(map(len, probe_t)) / len(probe_t) / 1024:.0f} KiB protobuf / "
              f"{sum(map(len, probe_e)) / len(probe_e) / 1024:.0f} KiB JSON a batch; "
              f"{no_text} calls without texts")
        del probe_t, probe_e

        cli("db", "upgrade", cwd=work, env=env)
        ingest_key = cli("keys", "create", "--scope", "ingest", "--name", "bench", cwd=work, env=env).strip()
        read_key = cli("keys", "create", "--scope", "read", "--name", "bench-read", cwd=work, env=env).strip()
        server = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--port", str(port)], cwd=work,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        exporters = [grpc_exporter(f"127.0.0.1:{grpc_port}", ingest_key) for _ in range(args.senders)]
        posts = {"traces": [lambda b: post_traces(url, ingest_key, b)] * args.senders,
                 "grpc": [post for _, post in exporters],
                 "requests": [lambda b: post_requests(url, ingest_key, b)] * args.senders}
        results = {path: [] for path in PATHS}  # (calls, seconds) per round
        span_ids = {"traces": set(), "grpc": set()}
        samples = {}
        try:
            wait_ready(url)  # serve opens the gRPC port before the HTTP one
            # Warm-up of every path and gRPC channel: salt, key cache, protobuf classes, connections, first parts.
            warm = events[:args.batch]
            post_traces(url, ingest_key, traces_bodies(warm, args.batch, rng)[0][0])
            for _, post in exporters:
                assert post(traces_bodies(warm, args.batch, rng)[0][0]) == 0
            post_requests(url, ingest_key, events_bodies(warm, args.batch)[0][0])
            stored_expected = (2 + len(exporters)) * len(warm)
            spans_expected = (1 + len(exporters)) * len(warm)

            print(f"\n{'round':>5}  {'order':<21} {'/v1/traces spans/s':>19} {'gRPC spans/s':>13} "
                  f"{'/v1/requests events/s':>22} {'http/ev':>8} {'grpc/ev':>8}")
            for rnd in range(args.rounds):
                order = PATHS[rnd % 3:] + PATHS[:rnd % 3]
                rates = {}
                for path in order:
                    if path == "requests":
                        bodies, ids = events_bodies(events, args.batch)
                    else:
                        bodies, ids = traces_bodies(events, args.batch, rng)  # serialized before the timing
                        span_ids[path].update(ids)
                        spans_expected += len(ids)
                        if rnd == args.rounds - 1:
                            samples[path] = (ids[len(ids) // 2], events[len(ids) // 2])
                    secs, rejected = send(posts[path], bodies)
                    assert rejected == 0, f"{LABELS[path]}: {rejected} rejected"
                    results[path].append((len(ids), secs))
                    rates[path] = len(ids) / secs
                    stored_expected += len(ids)
                print(f"{rnd + 1:>5}  {','.join(order):<21} {rates['traces']:>19,.0f} {rates['grpc']:>13,.0f} "
                      f"{rates['requests']:>22,.0f} {rates['traces'] / rates['requests']:>8.2f} "
                      f"{rates['grpc'] / rates['requests']:>8.2f}", flush=True)
            rss = peak_rss_mib(server.pid)
            for path, sample in samples.items():
                check_row(url, read_key, sample, path)
        finally:
            for channel, _ in exporters:
                channel.close()
            server.terminate()
            server.wait(30)

        from monitor.foundation.config import load_config
        from monitor.foundation.storage import Store
        cfg = load_config(env={}, overrides={"clickhouse": {"url": f"chdb://{os.path.join(work, 'var/clickhouse')}"}})
        store = Store.from_config(cfg)
        stored = store.scalar("SELECT count() FROM requests")
        spans = {r[0] for r in store.query("SELECT request_id FROM requests WHERE startsWith(request_id, 'otel-')")}

        def overall(path):
            calls = sum(c for c, _ in results[path])
            secs = sum(s for _, s in results[path])
            return calls, secs, calls / secs

        def ratios(path):
            return [(c1 / s1) / (c2 / s2) for (c1, s1), (c2, s2) in zip(results[path], results["requests"])]

        tc, ts, tr = overall("traces")
        gc, gs, gr = overall("grpc")
        ec, es, er = overall("requests")
        print(f"\nPOST /v1/traces   : {tc} spans in {ts:.2f} s = {tr:,.0f} spans/s ({args.senders} senders, "
              f"protobuf, {args.batch} a batch)")
        print(f"gRPC Export       : {gc} spans in {gs:.2f} s = {gr:,.0f} spans/s ({args.senders} senders, "
              f"a channel each, {args.batch} a batch)")
        print(f"POST /v1/requests : {ec} events in {es:.2f} s = {er:,.0f} events/s ({args.senders} senders, "
              f"JSON, {args.batch} a batch)")
        for label, rate, path, target in (("gRPC / events", gr, "grpc", TARGET_GRPC),
                                          ("HTTP traces / events", tr, "traces", TARGET)):
            rs = ratios(path)
            print(f"ratio {label}: {rate / er:.2f} (target >= {target}: "
                  f"{'met' if rate / er >= target else 'missed'}; rounds {min(rs):.2f} .. {max(rs):.2f})")
        print(f"stored: {stored} requests ({stored_expected} sent), {len(spans)} of them from spans "
              f"({spans_expected} sent: {len(spans & span_ids['traces'])} of {len(span_ids['traces'])} timed "
              f"over HTTP, {len(spans & span_ids['grpc'])} of {len(span_ids['grpc'])} over gRPC); one span's row "
              f"from each traces path matches its event field by field (texts included)")
        print(f"peak RSS of nlpmon serve: {rss:.0f} MiB")

        try:
            cost_split(cfg, store, ingest_key, events, args.batch, args.split_repeat, args.profile)
        finally:
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
