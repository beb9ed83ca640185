"""What a new user waits for, and what the serving process holds: `nlpmon serve --demo` on an empty store.

Starts the real command in a fresh directory (its own embedded store and port), then prints:
- seconds until the port answers (`/healthz`), and until `/readyz` says the demo's background work is done,
  with the time each step finished;
- the serving process's resident memory (VmRSS): at start-up, its peak while the demo computes, when the demo
  is done, and after ``--live-minutes`` of the demo's live traffic with the scheduler running;
- the baseline in the same run: a process that only imports the service and loads the embedding model, which
  is what start-up held before the model was loaded on first use.

    python bench/first_run.py --live-minutes 60

The install's share of `make run` is measured around this (README: `time make install` on a fresh clone).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import free_port, rss_mib  # noqa: E402


def get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except Exception:
        return None


def baseline_model_rss() -> float:
    """A process that imports the service and loads the model in itself (embeddings.worker false): what the
    serving process held for good before the model moved to a worker process."""
    code = ("import monitor.app, jobs.embeddings as e; from monitor.foundation.config import load_config;"
            "c=load_config(env={}, overrides={'embeddings': {'worker': False}}); m=e.Embedder(None, c); m.encode(['x']);"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--live-minutes", type=float, default=60.0)
    ap.add_argument("--dir", default=None, help="Run in this directory (default a new temporary one).")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="nlpmon-first-run-"))
    port = free_port()
    env = {**os.environ, "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "MONITOR_CONFIG": str(ROOT / "monitor.yaml"), "MONITOR_CLICKHOUSE_URL": f"chdb://{work}/clickhouse",
           "MONITOR_SERVER_PORT": str(port), "MONITOR_ALERTS_EXTERNAL_URL": f"http://127.0.0.1:{port}"}
    env["MONITOR_OTLP_GRPC_PORT"] = "0"  # no OTLP/gRPC: another bench's serve may hold 4317
    nlpmon = [sys.executable, "-m", "monitor.cli"]
    subprocess.run(nlpmon + ["db", "upgrade"], env=env, cwd=work, check=True, capture_output=True)
    log = open(work / "serve.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(nlpmon + ["serve", "--demo"], env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        while get(base + "/healthz") is None:
            if proc.poll() is not None:
                sys.exit(f"serve exited with {proc.returncode}; see {work / 'serve.log'}")
            time.sleep(0.1)
        port_s, startup = time.monotonic() - t0, rss_mib(proc.pid)
        print(f"port answers after {port_s:.1f} s; resident memory {startup:.0f} MiB", flush=True)
        peak, steps_done, seen = startup, {}, set()
        while True:
            ready = get(base + "/readyz") or {}
            bg = ready.get("background") or {}
            peak = max(peak, rss_mib(proc.pid))
            now = time.monotonic() - t0
            if bg:
                left = set(bg.get("left", []))
                for name in seen - left:
                    steps_done.setdefault(name, now)
                seen |= left
                if not bg.get("active"):
                    for name in seen:
                        steps_done.setdefault(name, now)
                    break
            time.sleep(1)
        demo_s, loaded = time.monotonic() - t0, rss_mib(proc.pid)
        for name, at in sorted(steps_done.items(), key=lambda kv: kv[1]):
            print(f"  step {name:10s} done at {at:6.1f} s", flush=True)
        print(f"demo computed after {demo_s:.1f} s (failed steps: {bg.get('failed') or 'none'}); resident memory "
              f"{loaded:.0f} MiB, peak {peak:.0f} MiB", flush=True)
        end = time.monotonic() + args.live_minutes * 60
        samples = []
        while time.monotonic() < end:
            time.sleep(min(30, max(0.0, end - time.monotonic())))
            samples.append(rss_mib(proc.pid))
            if len(samples) % 10 == 0:  # the trend, not only the end: growth and trims show between
                print(f"  live {len(samples) / 2:5.1f} min: resident memory {samples[-1]:.0f} MiB", flush=True)
        if samples:
            print(f"after {args.live_minutes:g} min of live demo traffic with the scheduler: resident memory "
                  f"{samples[-1]:.0f} MiB (min {min(samples):.0f}, max {max(samples):.0f})", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"baseline, same run: a process that imports the service and loads the embedding model in itself "
          f"(embeddings.worker false) holds {baseline_model_rss():.0f} MiB; target: the serving process <= 1024 MiB")


if __name__ == "__main__":
    main()
