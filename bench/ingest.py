"""Ingest throughput: POST /v1/requests against the raw clickhouse-connect insert of the same rows.

    .venv/bin/python bench/ingest.py [--events 100000] [--batch 1000] [--senders 2]

Starts `nlpmon serve` on the embedded store in a temporary directory (a real
separate process, as in production), sends realistic demo events with texts in
batches, then stops it and inserts exactly the rows the API stored, in the
same batch size, straight through clickhouse-connect into the requests table of
a second database at the same schema (so both pay for the rollups' materialized
views). Prints both rates, their ratio and the peak RSS of the serving process.
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--senders", type=int, default=2, help="concurrent HTTP senders")
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
    server = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--port", str(port)], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        post(url, key, json.dumps(events[:1]).encode())  # warm-up: salt, key cache, first parts
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(args.senders) as pool:
            answers = list(pool.map(lambda b: post(url, key, b), bodies))
        api_s = time.perf_counter() - t0
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
    rows = client.query(f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests").result_rows
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
    print(f"ratio API / raw         : {api_rate / raw_rate:.2f} (target >= 0.50)")
    print(f"peak RSS of nlpmon serve: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
