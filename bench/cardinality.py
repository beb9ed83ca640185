"""Cardinality attack: an application puts a unique value into a dimension of every request.

For each scenario a real `nlpmon serve` runs on a fresh embedded store with the
shipped defaults (drift and grounding off unless --all-jobs, to time what the
budget protects); N requests spread over the last hour, each with a unique
`feature` (or `prompt_version`), are sent through the HTTP API; then, once the
sli job has run over them, this prints:

- the sli job's duration for that hour and the metric points it wrote,
- `/` (overview, signed in) and `/metrics`: time and size,
- the server's peak RSS,
- scheduled runs skipped ("maximum number of running instances reached").

The baseline is the same with the budget off (`cardinality.enabled: false`), in
the same run, with fewer requests by default: unbounded, it grows with N (the
issue measured 115 s and 13.4 GB for 50,000 unique features).

    .venv/bin/python bench/cardinality.py [--requests 50000] [--baseline-requests 10000]
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.cookiejar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.common import free_port, peak_rss_mib, wait_ready  # noqa: E402

CONFIG = """
clickhouse: {url: "chdb://%(store)s"}
cardinality: {enabled: %(budget)s}
drift: {enabled: %(all_jobs)s}
grounding: {enabled: %(all_jobs)s}
"""


def nlpmon(cwd: str, env: dict, *args) -> str:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout


def events(n: int, dimension: str, offset: int) -> list[dict]:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=2)
    out = []
    for i in range(offset, offset + n):
        e = {"request_id": f"card-{i}", "ts": (now - dt.timedelta(seconds=3500 * i / max(n, 1) % 3500))
             .isoformat().replace("+00:00", "Z"), "service": "svc", "feature": "answer", "model": "m",
             "prompt_version": "v1", "status": "ok", "latency_ms": 200.0 + i % 800, "input_tokens": 10,
             "output_tokens": 5}
        e[dimension] = f"{dimension}-{i}"
        out.append(e)
    return out


def post(url: str, key: str, batch: list[dict]) -> None:
    req = urllib.request.Request(f"{url}/v1/requests", data=json.dumps(batch).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    urllib.request.urlopen(req, timeout=300).read()


def metrics(url: str, key: str) -> tuple[str, float, int]:
    t0 = time.perf_counter()
    req = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"})
    body = urllib.request.urlopen(req, timeout=300).read()
    return body.decode(), time.perf_counter() - t0, len(body)


def gauge(text: str, name: str, job: str) -> float | None:
    m = re.search(rf'{name}\{{job="{job}"\}} (\S+)', text)
    return float(m.group(1)) if m else None


def overview(url: str, key: str) -> tuple[float, int]:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{url}/login", timeout=60).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    opener.open(f"{url}/login", data=urllib.parse.urlencode({"csrf_token": token, "api_key": key}).encode(),
                timeout=60).read()
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        body = opener.open(f"{url}/?period=24h", timeout=300).read()
        elapsed = time.perf_counter() - t0
        best = elapsed if best is None else min(best, elapsed)
    return best, len(body)


def scenario(name: str, n: int, dimension: str, budget: bool, all_jobs: bool) -> dict:
    tmp = tempfile.mkdtemp(prefix="nlpmon-bench-card-")
    with open(os.path.join(tmp, "monitor.yaml"), "w") as f:
        f.write(CONFIG % {"store": os.path.join(tmp, "store"), "budget": str(budget).lower(),
                          "all_jobs": str(all_jobs).lower()})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env.update(MONITOR_CONFIG=os.path.join(tmp, "monitor.yaml"), DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    env["MONITOR_OTLP_GRPC_PORT"] = "0"  # no OTLP/gRPC: another bench's serve may hold 4317
    nlpmon(tmp, env, "db", "upgrade")
    key = nlpmon(tmp, env, "keys", "create", "--scope", "admin", "--name", "bench").strip()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(os.path.join(tmp, "serve.log"), "w")
    server = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--port", str(port)], cwd=tmp, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, "/healthz", 1200)
        t0 = time.perf_counter()
        batches = [events(min(1000, n - i), dimension, i) for i in range(0, n, 1000)]
        work = list(batches)
        lock = threading.Lock()

        def sender():
            while True:
                with lock:
                    if not work:
                        return
                    batch = work.pop()
                post(url, key, batch)

        threads = [threading.Thread(target=sender) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ingest_s = time.perf_counter() - t0
        sent_at = time.time()
        # The sli job runs every minute, 30 s after a minute closes: wait for a run that started after the ingest.
        deadline, sli_s = time.time() + 900, None
        while time.time() < deadline:
            text, _, _ = metrics(url, key)
            last_ok = gauge(text, "nlpmon_job_last_success_timestamp_seconds", "sli") or 0
            if last_ok > sent_at + 1:
                sli_s = gauge(text, "nlpmon_job_last_duration_seconds", "sli")
                break
            time.sleep(2)
        page_s, page_bytes = overview(url, key)
        _, metrics_s, metrics_bytes = metrics(url, key)
        rss = peak_rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        log.close()
    skipped = open(os.path.join(tmp, "serve.log")).read().count("maximum number of running instances reached")
    shutil.rmtree(tmp, ignore_errors=True)
    return {"scenario": name, "requests": n, "ingest s": ingest_s, "sli job s": sli_s, "/ s": page_s,
            "/ KiB": page_bytes / 1024, "/metrics s": metrics_s, "/metrics MB": metrics_bytes / 1e6,
            "server peak RSS MiB": rss, "skipped runs": skipped}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--baseline-requests", type=int, default=10_000, help="N for the runs with the budget off")
    ap.add_argument("--all-jobs", action="store_true", help="keep drift and grounding on (slower start)")
    args = ap.parse_args()
    rows = []
    for dimension in ("feature", "prompt_version"):
        for budget, n in ((True, args.requests), (False, args.baseline_requests)):
            name = f"unique {dimension}, budget {'on' if budget else 'OFF (baseline)'}"
            print(f"running: {name}, {n:,} requests ...", flush=True)
            rows.append(scenario(name, n, dimension, budget, args.all_jobs))
            print("   ", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    print("\ntargets with the budget on, 50,000 unique values in an hour: sli job < 5 s, / and /metrics < 1 s, "
          "/metrics < 5 MB, server < 1.5 GiB, no scheduled run skipped\n")
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
