"""Ingest throughput: POST /v1/requests against the raw clickhouse-connect insert of the same rows.

    .venv/bin/python bench/ingest.py [--events 100000] [--batch 1000] [--senders 2] [--profile] [--jobs]

Starts `nlpmon serve` on the embedded store in a temporary directory (a real
separate process, as in production; without its job scheduler unless ``--jobs``), sends realistic demo events with texts in
batches, then stops it and inserts exactly the rows the API stored, in the
batches they were sent in and in the order they were sent, straight through
clickhouse-connect into the requests table of a second database at the same
schema (so both pay for the rollups' materialized views). Prints both rates,
their ratio and the peak RSS of the serving process.

``--profile`` samples the serving process with py-spy (``pip install -e '.[bench]'``) while it
ingests and prints where its CPU goes per batch: the ingest pipeline's steps, the insert
into the engine, JSON, HTTP and the rest.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import free_port, peak_rss_mib, wait_ready  # noqa: E402

from monitor import demo  # noqa: E402
from monitor.foundation.tables.requests import COLUMNS as REQUEST_COLUMNS  # noqa: E402


def cli(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout


def make_events(n: int) -> list[dict]:
    end = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    out = []
    for kind, ev in demo.generate(days=2, rps=max(n / 172800 * 1.3, 0.01), end=end, seed=11):
        if kind == "requests":
            out.append(ev)
            if len(out) == n:
                break
    return out


def post(url: str, key: str, body: bytes) -> dict:
    req = urllib.request.Request(f"{url}/v1/requests", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


# Where a sampled stack's time goes: the first of these steps with a frame in the stack names it.
STEPS = (
    ("engine: INSERT (chDB, views included)", ("execute_data_insert",)),
    ("engine: id lookup (dedup)", ("stored_ids",)),
    ("engine: other queries", ("chdb._chdb.query", "Connection.query")),
    ("driver: encode columns", ("write_column", "build_insert", "data_insert", "chunk_gen")),
    ("pipeline: validate", ("validate",)),
    ("pipeline: redact", ("_redact", "redact")),
    ("pipeline: language", ("_language", "detect")),
    ("pipeline: price, tags", ("_prepare_request",)),
    ("pipeline: cardinality budget", ("CardinalityBudget.apply",)),
    ("pipeline: dedup token", ("_canonical", "_insert")),
    ("pipeline: rest", ("Ingestor.ingest",)),
    ("JSON parse", ("parse_batch", "loads")),
    ("HTTP, Flask, auth", ("wsgi", "waitress", "flask", "require")),
)


# Leaf frames of threads that wait (the server's idle workers, the scheduler, thread pools): py-spy counts
# some of them as active.
WAITING = ("wait", "_worker", "poll", "poll2", "select", "sleep", "accept", "_main_loop")


def profile_top(raw: str, batches: int, rate: int) -> list[str]:
    """py-spy's raw (collapsed) stacks as CPU-ms per batch per step (waiting threads left out)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1].split(" (")[0].rsplit(".", 1)[-1]
        if leaf in WAITING:
            continue
        names = [f.split(" (")[0] for f in frames]
        step = next((label for label, keys in STEPS if any(k in name for name in names for k in keys)), "other")
        counts[step] += int(n)
    total = sum(counts.values())
    out = [f"  {'where':<40} {'ms/batch':>9} {'share':>7}"]
    for step, n in counts.most_common():
        out.append(f"  {step:<40} {n * 1000 / rate / batches:>9.1f} {n / total:>7.1%}")
    out.append(f"  {'total CPU (all threads)':<40} {total * 1000 / rate / batches:>9.1f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--senders", type=int, default=2, help="concurrent HTTP senders")
    ap.add_argument("--profile", action="store_true", help="sample the server with py-spy while it ingests")
    ap.add_argument("--jobs", action="store_true",
                    help="keep the server's job scheduler on: its first runs over the hours just ingested take a core "
                         "for seconds at a moment of their own, so the API side swings (0.58 or 0.79 on the same data)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="nlpmon-bench-")
    env = {**os.environ, "MONITOR_CLICKHOUSE_URL": "chdb://./var/clickhouse", "DO_NOT_TRACK": "1",
           "HF_HUB_OFFLINE": "1", "MONITOR_LOGGING_LEVEL": "WARNING"}
    env["MONITOR_OTLP_GRPC_PORT"] = "0"  # no OTLP/gRPC: another bench's serve may hold 4317
    env.pop("MONITOR_CONFIG", None)
    print(f"preparing {args.events} demo events ...", flush=True)
    events = make_events(args.events)
    bodies = [json.dumps(events[i:i + args.batch]).encode() for i in range(0, len(events), args.batch)]
    mean_kib = sum(map(len, bodies)) / len(bodies) / 1024
    print(f"{len(events)} events in {len(bodies)} batches of {args.batch} ({mean_kib:.0f} KiB JSON each)")

    cli("db", "upgrade", cwd=work, env=env)
    key = cli("keys", "create", "--scope", "ingest", "--name", "bench", cwd=work, env=env).strip()
    port = free_port()
    serve = ["serve", "--port", str(port)] + ([] if args.jobs else ["--no-scheduler"])
    print(f"server: nlpmon {' '.join(serve)}", flush=True)
    server = subprocess.Popen([sys.executable, "-m", "monitor.cli", *serve], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        post(url, key, json.dumps(events[:1]).encode())  # warm-up: salt, key cache, first parts
        spy = None
        if args.profile:
            profile_out = os.path.join(work, "ingest.pyspy")
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid",
                                    str(server.pid), "--rate", "200", "--format", "raw", "--nonblocking",
                                    "-o", profile_out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(args.senders) as pool:
            answers = list(pool.map(lambda b: post(url, key, b), bodies))
        api_s = time.perf_counter() - t0
        if spy is not None:
            spy.send_signal(2)  # py-spy writes its file on SIGINT
            spy.wait(60)
        rss = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    accepted = sum(a["accepted"] for a in answers)
    rejected = sum(a["rejected"] for a in answers)

    # Raw insert of the very rows the API stored, into a second database migrated to the same
    # schema, so the raw insert pays for the same materialized views (the rollups) as the API's.
    import clickhouse_connect

    from monitor.foundation import migrate
    from monitor.foundation.config import load_config
    from monitor.foundation.storage import Store
    path = os.path.join(work, "var/clickhouse")
    client = clickhouse_connect.get_client(interface="chdb", path=path, database="nlpmon")
    stored = {r[0]: r for r in client.query(f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests").result_rows}
    rows = [stored[e["request_id"]] for e in events if e["request_id"] in stored]  # as sent: batches and order
    raw_cfg = load_config(env={}, overrides={"clickhouse": {"url": f"chdb://{path}", "database": "nlpmon_raw"}})
    raw_store = Store.from_config(raw_cfg)
    migrate.upgrade(raw_store, raw_cfg)
    raw_client = raw_store.client
    t0 = time.perf_counter()
    for i in range(0, len(rows), args.batch):
        raw_client.insert("requests", rows[i:i + args.batch], column_names=REQUEST_COLUMNS)
    raw_s = time.perf_counter() - t0
    assert raw_client.command("SELECT count() FROM requests") == len(rows)

    api_rate = accepted / api_s
    raw_rate = len(rows) / raw_s
    print(f"API   POST /v1/requests : {accepted} accepted, {rejected} rejected in {api_s:.2f} s "
          f"= {api_rate:,.0f} events/s ({args.senders} senders)")
    print(f"raw   client.insert     : {len(rows)} rows in {raw_s:.2f} s = {raw_rate:,.0f} rows/s")
    print(f"ratio API / raw         : {api_rate / raw_rate:.2f} (target >= 0.70)")
    print(f"peak RSS of nlpmon serve: {rss:.0f} MiB")
    if args.profile:
        with open(profile_out) as f:
            print(f"\nwhere the server's CPU went, per batch of {args.batch} (py-spy, 200 samples/s, {len(bodies)} batches):")
            print("\n".join(profile_top(f.read(), len(bodies), 200)))


if __name__ == "__main__":
    main()
