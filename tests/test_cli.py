"""The nlpmon command line, run as a real separate process (as a user would)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from monitor.foundation import migrate
from tests.helpers import free_port, request_event
from tests.otel_records import CURRENT, recording, request_id


def nlpmon(*args, cwd, env_extra=None, timeout=120, check=False):
    env = {**os.environ, "MONITOR_CLICKHOUSE_URL": "chdb://./var/clickhouse", **(env_extra or {})}
    env.pop("MONITOR_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"nlpmon {' '.join(args)} failed: {proc.stderr}")
    return proc


def test_store_busy_is_one_line_and_non_zero(chdb_dir, store, tmp_path):
    # This test process holds the session's embedded store, as `nlpmon serve` would.
    p = nlpmon("keys", "list", cwd=tmp_path, env_extra={"MONITOR_CLICKHOUSE_URL": f"chdb://{chdb_dir}"})
    assert p.returncode == 3
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another process" in lines[0] and "nlpmon serve" in lines[0]


def test_db_commands(tmp_path):
    assert "base" in nlpmon("db", "current", cwd=tmp_path).stdout
    p = nlpmon("keys", "list", cwd=tmp_path)
    assert p.returncode == 1 and "nlpmon db upgrade" in p.stderr and "Traceback" not in p.stderr
    head = migrate.head()
    assert f"schema at {head}" in nlpmon("db", "upgrade", cwd=tmp_path, check=True).stdout
    assert f"schema at {head}" in nlpmon("db", "upgrade", cwd=tmp_path, check=True).stdout
    assert nlpmon("db", "current", cwd=tmp_path).stdout.strip() == head
    assert "schema at 0001" in nlpmon("db", "downgrade", "0001", cwd=tmp_path, check=True).stdout
    assert "schema at base" in nlpmon("db", "downgrade", "base", cwd=tmp_path, check=True).stdout
    assert f"latest is {head}" in nlpmon("db", "current", cwd=tmp_path).stdout


def test_config_error_is_one_line(tmp_path):
    (tmp_path / "monitor.yaml").write_text("server: {prot: 1}\n")
    p = nlpmon("db", "current", cwd=tmp_path)
    assert p.returncode == 1 and p.stderr.strip() == "nlpmon: config key 'server.prot': unknown key"


def test_keys_ingest_and_serve(tmp_path):
    nlpmon("db", "upgrade", cwd=tmp_path, check=True)
    created = nlpmon("keys", "create", "--scope", "ingest", "--scope", "read", "--name", "ci", cwd=tmp_path,
                     check=True)
    key = created.stdout.strip()
    assert key.startswith("nlpm_") and "cannot be shown again" in created.stderr
    listed = nlpmon("keys", "list", cwd=tmp_path, check=True).stdout
    key_id = key.split("_")[1]
    assert key_id in listed and "ingest,read" in listed and key not in listed

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    lines = [json.dumps(request_event(i, ts=now)) for i in range(3)] + ["{oops", json.dumps(request_event(9, ts=now,
                                                                                                  status="??"))]
    (tmp_path / "events.ndjson").write_text("\n".join(lines) + "\n")
    p = nlpmon("ingest", "events.ndjson", "--kind", "requests", cwd=tmp_path, check=True)
    assert "accepted 3" in p.stdout and "rejected 2" in p.stdout
    assert "row 3: _row: line 4 is not valid JSON" in p.stderr and "row 4: status" in p.stderr

    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "MONITOR_CLICKHOUSE_URL": "chdb://./var/clickhouse", "MONITOR_OTLP_GRPC_PORT": str(grpc_port)}
    server = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                    assert json.loads(r.read())["status"] == "ready"
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"server did not come up: {server.stderr.read() if server.poll() is not None else ''}")
        # While the server holds the embedded store, the CLI says so ...
        busy = nlpmon("keys", "list", cwd=tmp_path)
        assert busy.returncode == 3 and "in use by another process" in busy.stderr
        # ... and sending through the server's API works.
        sent = subprocess.run([sys.executable, "-m", "monitor.cli", "ingest", "-", "--url", url],
                              input=json.dumps(request_event(20, ts=now)) + "\n", cwd=tmp_path, text=True,
                              capture_output=True, env={**env, "NLPMON_API_KEY": key}, timeout=60)
        assert sent.returncode == 0 and "accepted 1" in sent.stdout, sent.stderr
        req = urllib.request.Request(f"{url}/v1/requests/req-20", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["request"]["request_id"] == "req-20"
        # An OpenTelemetry SDK exporting over gRPC to the serve's OTLP/gRPC port, as `opentelemetry-instrument` does.
        span = _export_over_grpc(grpc_port, key)
        req = urllib.request.Request(f"{url}/v1/requests/{request_id(span)}",
                                     headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["request"]["output_text"] == "It ships tomorrow."
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert key not in out + err
    assert "Traceback" not in err

    assert nlpmon("keys", "revoke", key_id, cwd=tmp_path, check=True).stdout.strip() == f"revoked {key_id}"
    assert "revoked" in nlpmon("keys", "list", cwd=tmp_path, check=True).stdout


def _export_over_grpc(port: int, key: str):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    tracer, spans, _, _ = recording()
    with tracer.start_as_current_span("chat", attributes=CURRENT) as span:
        pass
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True,
                                headers={"authorization": f"Bearer {key}"})
    assert exporter.export(spans.get_finished_spans()).name == "SUCCESS"
    return span


def test_jobs_commands(tmp_path):
    nlpmon("db", "upgrade", cwd=tmp_path, check=True)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    (tmp_path / "events.ndjson").write_text("\n".join(json.dumps(request_event(i, ts=now)) for i in range(20)) + "\n")
    nlpmon("ingest", "events.ndjson", cwd=tmp_path, check=True)
    listed = nlpmon("jobs", "list", cwd=tmp_path, check=True).stdout
    assert "sli" in listed and "slo" in listed and "cost" in listed and "never run" in listed
    ran = nlpmon("jobs", "run", "sli", cwd=tmp_path, check=True).stdout
    assert ran.startswith("sli: ok,") and "points" in ran
    assert "last run" in nlpmon("jobs", "list", cwd=tmp_path, check=True).stdout
    bad = nlpmon("jobs", "run", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "jobs are sli, slo, cost, hallucination_sample, hallucination" in bad.stderr
    rebuilt = nlpmon("rollups", "rebuild", "--from", now[:10] + "T00:00:00Z", "--to", "2100-01-01T00:00:00Z",
                     cwd=tmp_path)
    assert rebuilt.returncode == 0 and "rebuilding rollups" in rebuilt.stderr, rebuilt.stderr


def test_missing_embedding_model_stops_serve_at_start(chdb_dir, tmp_path):
    # In this process (the session's store directory), so no second engine is needed.
    import uuid

    from click.testing import CliRunner

    from monitor.cli import cli
    database = f"t_{uuid.uuid4().hex[:12]}"
    (tmp_path / "monitor.yaml").write_text("")
    env = {"MONITOR_CONFIG": str(tmp_path / "monitor.yaml"), "MONITOR_CLICKHOUSE_URL": f"chdb://{chdb_dir}",
           "MONITOR_CLICKHOUSE_DATABASE": database, "MONITOR_EMBEDDINGS_MODEL_PATH": str(tmp_path / "gone"),
           "MONITOR_SERVER_PORT": str(free_port())}
    runner = CliRunner()
    try:
        assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
        result = runner.invoke(cli, ["serve"], env=env)
        assert result.exit_code == 1
        assert "nlpmon: embeddings.model_path:" in result.output and "gone" in result.output
        assert "Traceback" not in result.output and "serving on" not in result.output
    finally:
        from monitor.foundation.config import load_config
        from monitor.foundation.storage import Store
        Store.from_config(load_config(env=env)).command(f"DROP DATABASE IF EXISTS `{database}`")
