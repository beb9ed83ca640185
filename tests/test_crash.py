"""A real `nlpmon serve` killed with SIGKILL in the middle of batch inserts: after a restart and the
clients' resends, every event is stored once and the rollups converge to the raw rows on their own."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from tests.helpers import free_port

BATCHES, PER_BATCH = 12, 1500
CONFIG = """
clickhouse: {url: "chdb://%s"}
otlp: {grpc_port: 0}
drift: {enabled: false}
grounding: {enabled: false}
alerts: {enabled: false}
jobs: {reconcile_interval: 2s, sli_interval: 1h, slo_interval: 1h, cost_interval: 1h}
"""


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    return {**env, "MONITOR_CONFIG": str(tmp_path / "monitor.yaml")}


def _nlpmon(tmp_path, *args) -> str:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120, check=True).stdout


def _serve(tmp_path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--port", str(port)], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stderr.read()}")
            time.sleep(0.1)
    raise AssertionError("serve did not start")


def _batches() -> list[list[dict]]:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    out = []
    for b in range(BATCHES):
        out.append([{"request_id": f"crash-{b}-{i}", "ts": (now - dt.timedelta(seconds=(b * PER_BATCH + i) % 3000))
                     .isoformat().replace("+00:00", "Z"), "service": "svc", "feature": f"f{i % 3}", "model": "m",
                     "status": "ok" if i % 17 else "error", "latency_ms": 100.0 + i % 900, "input_tokens": 10,
                     "output_tokens": 5} for i in range(PER_BATCH)])
    return out


def _post(port: int, key: str, batch: list[dict]) -> dict | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/requests", data=json.dumps(batch).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, OSError):
        return None  # the server died under this batch: the client resends it


_STATE = """
import json, sys
from monitor.foundation.config import load_config
from monitor.foundation.rollups import LINEAGE
from monitor.foundation.storage import Store
store = Store.from_config(load_config(sys.argv[1], env={}))
out = {"raw rows": int(store.scalar("SELECT count() FROM requests")),
       "raw FINAL": int(store.scalar("SELECT count() FROM requests FINAL"))}
for table, *_ in LINEAGE:
    if table.startswith("requests"):
        out[table] = int(store.scalar(f"SELECT sum(requests) FROM {table}") or 0)
store.close()
print(json.dumps(out))
"""


def _state(tmp_path) -> dict[str, int]:
    # A process of its own, like the operator's: chDB opens one embedded store per process, and this
    # test's worker may have another test's store open.
    out = subprocess.run([sys.executable, "-c", _STATE, str(tmp_path / "monitor.yaml")], cwd=tmp_path,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _reconcile_successes(port: int, key: str) -> float:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {key}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    m = re.search(r'nlpmon_job_last_success_timestamp_seconds\{job="reconcile"\} (\S+)', text)
    return float(m.group(1)) if m else 0.0


def test_sigkill_during_inserts_then_resend_converges_without_a_manual_step(tmp_path):
    store_dir = tmp_path / "store"
    (tmp_path / "monitor.yaml").write_text(CONFIG % store_dir)
    _nlpmon(tmp_path, "db", "upgrade")
    key = _nlpmon(tmp_path, "keys", "create", "--scope", "ingest", "--scope", "read", "--name", "crash").strip()
    batches = _batches()

    port = free_port()
    rounds, before = 0, {}
    # Kill at a different moment each round, until a kill lands between an insert's raw part and its
    # views' parts (the case that used to lose rollup counts for good) or the rounds run out.
    for delay in (0.0, 0.05, 0.11, 0.17, 0.23, 0.31):
        rounds += 1
        server = _serve(tmp_path, port)
        answers: dict[int, dict | None] = {}

        def send(indexes):
            for i in indexes:
                answers[i] = _post(port, key, batches[i])

        threads = [threading.Thread(target=send, args=(range(k, BATCHES, 4),)) for k in range(4)]
        for t in threads:
            t.start()
        while len(answers) < 2:
            time.sleep(0.005)
        time.sleep(delay)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        for t in threads:
            t.join(60)
        before = _state(tmp_path)
        print(f"\nround {rounds}: SIGKILL {delay:.2f} s after the second answer; store {before}")
        if len(set(before.values())) > 1:
            break

    server = _serve(tmp_path, port)
    try:
        for i, batch in enumerate(batches):  # every client resends what it has no answer for (here: all)
            answer = _post(port, key, batch)
            assert answer is not None and answer["accepted"] == PER_BATCH and answer["rejected"] == 0, answer
        # The reconciliation needs two runs that see a difference; wait for three successes.
        first = _reconcile_successes(port, key)
        deadline, seen = time.time() + 60, {first}
        while len(seen) < 4 and time.time() < deadline:
            time.sleep(0.5)
            seen.add(_reconcile_successes(port, key))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    after = _state(tmp_path)
    print(f"after restart, resend and reconciliation: {after}")
    total = BATCHES * PER_BATCH
    assert after == {k: total for k in after}, after
