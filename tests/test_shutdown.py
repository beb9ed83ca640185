"""A real `nlpmon serve` stopped with SIGTERM and with SIGKILL on the embedded store: SIGTERM delivers what
the outbox holds and releases the scheduler lease, and a restart after either runs its jobs at once
(no other process can hold an embedded store's lease, so there is nothing to wait for)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.helpers import free_port
from tests.loopback import Recorder

CONFIG = """
clickhouse: {url: "chdb://%(dir)s"}
otlp: {grpc_port: %(grpc)s}
drift: {enabled: false}
grounding: {enabled: false}
jobs: {lease: 30s, shutdown_grace: 10s}
alerts:
  interval: 1h
  default_rules: false
  slo_rules: false
  receivers: [{name: hook, webhook: {url: "%(hook)s"}}]
  route: {receiver: hook, group_wait: 0s}
  delivery: {backoff_initial: 1s}
  system: {watchdog_receiver: hook}
"""


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    return {**env, "MONITOR_CONFIG": str(tmp_path / "monitor.yaml")}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Serve:
    """`nlpmon serve` in a process of its own, its stderr in a file the test reads."""

    def __init__(self, tmp_path, port: int, n: int):
        self.log = tmp_path / f"serve-{n}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--port", str(port)],
                                     cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("w"))
        self.port = port

    def text(self) -> str:
        return self.log.read_text()

    def wait_line(self, needle: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.text().splitlines():
                if needle in line:
                    return line
            assert self.proc.poll() is None, f"serve exited: {self.text()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"no line with {needle!r} in: {self.text()[-3000:]}")


def _lease_rows(tmp_path) -> list[list]:
    code = ("import json, sys\nfrom monitor.foundation.config import load_config\n"
            "from monitor.foundation.storage import Store\n"
            "s = Store.from_config(load_config(sys.argv[1], env={}))\n"
            "print(json.dumps([[r[0], r[1], r[2]] for r in s.query(\"SELECT term, holder, kind FROM leases "
            "WHERE name = 'scheduler' ORDER BY claimed_at\")]))\ns.close()\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "monitor.yaml")], cwd=tmp_path,
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sigterm_delivers_the_outbox_and_releases_the_lease_and_restarts_run_jobs_at_once(tmp_path):
    with Recorder() as hook:
        hook.statuses = [503]  # the Watchdog's first send fails: it waits in the outbox for its retry
        grpc_port = free_port()
        (tmp_path / "monitor.yaml").write_text(CONFIG % {"dir": tmp_path / "ch", "hook": hook.url, "grpc": grpc_port})
        subprocess.run([sys.executable, "-m", "monitor.cli", "db", "upgrade"], cwd=tmp_path, env=_env(tmp_path),
                       check=True, capture_output=True, timeout=120)
        port = free_port()
        first = Serve(tmp_path, port, 1)
        assert "scheduler active" in first.wait_line("nlpmon serving on")
        deadline = time.monotonic() + 60
        while hook.refused == 0:
            assert time.monotonic() < deadline, first.text()[-3000:]
            time.sleep(0.1)
        time.sleep(1.5)  # the retry is due; the next evaluation is an hour away, so only the stop can send it
        assert hook.take() == []
        assert f"OTLP/gRPC on 127.0.0.1:{grpc_port}" in first.text() and _listening(grpc_port)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0, first.text()[-3000:]
        assert not _listening(grpc_port)
        (watchdog,) = hook.take()
        assert watchdog["commonLabels"]["alertname"] == "Watchdog" and watchdog["status"] == "firing"
        assert "Traceback" not in first.text()
        rows = _lease_rows(tmp_path)
        assert [kind for _, _, kind in rows][-1] == "release", rows

        # Restarted after SIGTERM, then after SIGKILL: active at once both times, each in a new term (and each
        # takes the OTLP/gRPC port again: it would not start without it).
        second = Serve(tmp_path, port, 2)
        assert "scheduler active" in second.wait_line("nlpmon serving on"), second.text()
        second.proc.send_signal(signal.SIGKILL)
        second.proc.wait(timeout=30)
        third = Serve(tmp_path, port, 3)
        assert "scheduler active" in third.wait_line("nlpmon serving on"), third.text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200
        third.proc.send_signal(signal.SIGTERM)
        assert third.proc.wait(timeout=30) == 0
    terms = [(term, holder) for term, holder, kind in _lease_rows(tmp_path) if kind == "claim"]
    assert len(terms) == 3 and len({t for t, _ in terms}) == 3 and len({h for _, h in terms}) == 3
