"""Every run leaves a trace: a run is recorded when it starts, and one that never finished shows as
interrupted (in ``nlpmon jobs list``, GET /v1/jobs and /metrics), including a run killed with SIGKILL."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from jobs.sli import SliJob
from monitor.app import create_app
from monitor.foundation.storage import StoreUnavailable
from monitor.foundation.tables import job_runs
from tests.helpers import auth, request_event
from tests.test_jobs import INTERVAL, T0, ingest, traffic

UTC = dt.timezone.utc


@pytest.fixture
def env(make_config, clock, make_store):
    cfg = make_config(jobs={"catchup_max": "6h", "recompute": "10m", "grace": "30s"})
    store = make_store(cfg)
    clock.set(T0 + dt.timedelta(hours=1, minutes=1))
    app = create_app(cfg, store, clock)
    svc = app.extensions["nlpmon"]
    key = svc.keys.create("test-read", ["read"])[1]
    return cfg, store, clock, app, key


def jobs_api(app, key) -> dict:
    r = app.test_client().get("/v1/jobs", headers=auth(key))
    assert r.status_code == 200, r.data
    return {j["job"]: j for j in r.json["jobs"]}


class ServerLikeStore:
    """The test's embedded store, seen as a ClickHouse server would be: another process may be running a job."""

    embedded = False

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)


class JobRunsDown(ServerLikeStore):
    """A store whose job_runs writes fail as an unreachable store's would; everything else works."""

    def insert(self, table, rows, column_names):
        if table == "job_runs":
            raise StoreUnavailable("ClickHouse at db:8123 is unreachable")
        return self._store.insert(table, rows, column_names)


def dead_run(store, job, started, window_end):
    """The running row a run leaves when its process is killed before it finishes (written as start() does,
    but by a process that is gone: its run_id is not alive in this one)."""
    store.insert("job_runs", [[job, uuid.uuid4(), started, window_end - dt.timedelta(hours=1), window_end, 0.0, 0,
                               "running", ""]], job_runs.COLUMNS)


def test_a_finished_run_shows_its_final_status(env):
    cfg, store, clock, app, key = env
    ingest(app.extensions["nlpmon"].ingestor, "requests", traffic(n=200)[0])
    result = SliJob(store, cfg, clock, INTERVAL).run()
    assert result.status == "ok" and result.rows > 0
    # Two rows for the run (its start and its end), one run_id and one started_at.
    rows = store.query("SELECT run_id, started_at, status FROM job_runs ORDER BY status")
    assert [r[2] for r in rows] == ["ok", "running"] and rows[0][:2] == rows[1][:2]
    last = job_runs.latest(store, clock.now())["sli"]
    assert last.status == "ok" and last.rows == result.rows and last.finished_at is not None
    assert last.failures == 0 and last.last_ok_window_end == result.window_end
    assert job_runs.last_success_end(store, "sli") == result.window_end
    body = jobs_api(app, key)["sli"]
    assert body["last_run"]["status"] == "ok" and body["last_run"]["finished"] is True
    assert body["last_run"]["rows"] == result.rows and body["last_run"]["window"]["to"] == "2026-11-24T09:00:00Z"
    assert body["last_success"]["window_end"] == "2026-11-24T09:00:00Z" and body["failures"] == 0

    # A failing run: its final row says error, with the error's first line.
    clock.advance(60)
    store.command("DETACH TABLE requests_1m")
    try:
        failed = SliJob(store, cfg, clock, INTERVAL).run()
    finally:
        store.command("ATTACH TABLE requests_1m")
    assert failed.status == "error"
    body = jobs_api(app, key)["sli"]
    assert body["last_run"]["status"] == "error" and "requests_1m" in body["last_run"]["error"]
    assert "\n" not in body["last_run"]["error"] and body["failures"] == 1
    assert body["last_success"]["window_end"] == "2026-11-24T09:00:00Z"  # the failure is not a success
    metrics = app.test_client().get("/metrics", headers=auth(key)).get_data(as_text=True)
    assert 'nlpmon_job_last_run_failed{job="sli"} 1.0' in metrics
    # While the next run is going, the gauge keeps the last ended run's outcome (an alert on it does not flap).
    clock.advance(60)
    job_runs.start(store, "sli", uuid.uuid4(), clock.now(), T0, T0 + dt.timedelta(hours=1))
    assert jobs_api(app, key)["sli"]["last_run"]["status"] == "running"
    metrics = app.test_client().get("/metrics", headers=auth(key)).get_data(as_text=True)
    assert 'nlpmon_job_last_run_failed{job="sli"} 1.0' in metrics


def test_a_newer_run_makes_an_older_running_row_interrupted(env):
    cfg, store, clock, app, key = env
    server = ServerLikeStore(store)
    killed_at = clock.now()
    dead_run(store, "sli", killed_at, T0 + dt.timedelta(hours=1))
    # On a server store another process may still be running it: running, and not (yet) a failure.
    last = job_runs.latest(server, clock.now())["sli"]
    assert last.status == "running" and last.finished_at is None and last.failures == 0
    assert last.outcome is None
    # A later run of the same job has started: the earlier one can only have been interrupted.
    clock.advance(60)
    assert SliJob(server, cfg, clock, INTERVAL).run().status == "ok"
    runs = job_runs.history(server, "sli", 10, clock.now())
    assert [r.status for r in runs] == ["ok", "interrupted"]
    assert runs[1].started_at == killed_at and runs[1].finished_at is None
    last = job_runs.latest(server, clock.now())["sli"]
    assert last.status == "ok" and last.failures == 1  # the interrupted run counts as a failure
    # Nor is an interrupted run a success: the next run resumes from the last ok one.
    assert job_runs.last_success_end(store, "sli") == runs[0].window_end


def test_a_run_that_never_finished_is_interrupted_after_a_bound(env):
    cfg, store, clock, app, key = env
    server = ServerLikeStore(store)
    dead_run(store, "cost", clock.now() - job_runs.STALE_AFTER + dt.timedelta(minutes=1), T0)
    assert job_runs.latest(server, clock.now())["cost"].status == "running"
    clock.advance(dt.timedelta(minutes=2))
    last = job_runs.latest(server, clock.now())["cost"]
    assert last.status == "interrupted" and last.failures == 1 and last.outcome == "interrupted"


def test_on_an_embedded_store_only_this_process_can_be_running_a_run(env):
    cfg, store, clock, app, key = env
    # A run this process started and has not finished: running (the API sees the scheduler's run).
    alive = uuid.uuid4()
    job_runs.start(store, "slo", alive, clock.now(), T0, T0 + dt.timedelta(hours=1))
    # One another process left: only one process can hold an embedded store, so that process is gone.
    dead_run(store, "cost", clock.now(), T0)
    body = jobs_api(app, key)
    assert body["slo"]["last_run"]["status"] == "running" and body["slo"]["last_run"]["finished"] is False
    assert body["cost"]["last_run"]["status"] == "interrupted" and body["cost"]["last_success"] is None
    metrics = app.test_client().get("/metrics", headers=auth(key)).get_data(as_text=True)
    assert 'nlpmon_job_last_run_failed{job="cost"} 1.0' in metrics
    assert 'nlpmon_job_failures_total{job="cost"} 1.0' in metrics
    assert 'nlpmon_job_last_run_failed{job="slo"} 0.0' in metrics  # running is not failed
    assert 'nlpmon_job_last_duration_seconds{job="slo"}' not in metrics  # no run has finished yet
    job_runs.record(store, job_runs.RunResult("slo", T0, T0 + dt.timedelta(hours=1), run_id=alive), clock.now())
    assert jobs_api(app, key)["slo"]["last_run"]["status"] == "ok"
    r = app.test_client().get("/v1/jobs/slo", headers=auth(key))
    assert r.status_code == 200 and [run["status"] for run in r.json["runs"]] == ["ok"]
    assert app.test_client().get("/v1/jobs/nope", headers=auth(key)).status_code == 404
    assert app.test_client().get("/v1/jobs").status_code == 401


def test_ctrl_c_records_the_run_as_interrupted(env):
    cfg, store, clock, app, key = env
    ingest(app.extensions["nlpmon"].ingestor, "requests", traffic(n=500)[0])
    job = SliJob(store, cfg, clock, INTERVAL)
    job.chunk_size = 100

    def stop(n):
        raise KeyboardInterrupt

    job.after_chunk = stop
    with pytest.raises(KeyboardInterrupt):
        job.run()
    last = job_runs.latest(store, clock.now())["sli"]
    assert last.status == "interrupted" and last.error == "KeyboardInterrupt" and last.finished_at


def test_a_store_that_cannot_record_the_start_does_not_stop_the_run(env, caplog):
    cfg, store, clock, app, key = env
    ingest(app.extensions["nlpmon"].ingestor, "requests", traffic(n=200)[0])
    result = SliJob(JobRunsDown(store), cfg, clock, INTERVAL).run()
    assert result.status == "ok" and result.rows > 0
    assert store.scalar("SELECT count() FROM metric_points") == result.rows
    assert "could not record the start of sli" in caplog.text and "could not record run of sli" in caplog.text


# -- a real process killed with SIGKILL ----------------------------------------------------------
RUNNER = """
import sys, time
from monitor.foundation.clock import SystemClock, parse_time
from monitor.foundation.config import load_config
from monitor.foundation.storage import Store
from jobs.sli import SliJob

config = load_config()
job = SliJob(Store.from_config(config), config, SystemClock(), config.jobs.schedule.sli)
job.chunk_size = 1

def inside(n):
    print("inside compute", flush=True)
    time.sleep(600)

job.after_chunk = inside
job.run(since=parse_time(sys.argv[1]))
"""

API = """
import json
from monitor.app import create_app
app = create_app()
key = app.extensions["nlpmon"].keys.create("fault-test", ["read"])[1]
r = app.test_client().get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
print(json.dumps({"status": r.status_code, "body": r.json}))
"""


def test_a_run_killed_with_sigkill_shows_as_interrupted(tmp_path):
    # Its own store directory, used by one subprocess at a time (chDB allows one process per directory,
    # and this test process may already hold the session's).
    (tmp_path / "monitor.yaml").write_text(f"clickhouse:\n  url: chdb://{tmp_path / 'store'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["MONITOR_CONFIG"] = str(tmp_path / "monitor.yaml")

    def run(*args, **kw):
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=180, **kw)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def nlpmon(*args):
        return run("-m", "monitor.cli", *args)

    nlpmon("db", "upgrade")
    start = time.time() - 3600
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    events = [request_event(i, ts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + i * 3)))
              for i in range(1000)]
    (tmp_path / "events.ndjson").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    nlpmon("ingest", "events.ndjson")
    assert nlpmon("jobs", "run", "sli", "--from", stamp).startswith("sli: ok,")  # the previous, successful run

    (tmp_path / "runner.py").write_text(RUNNER)
    proc = subprocess.Popen([sys.executable, "runner.py", stamp], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the run has written its first chunk
        assert line.strip() == "inside compute", proc.stderr.read() if proc.poll() is not None else line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()

    listed = nlpmon("jobs", "list")
    sli = listed[listed.index("sli "):].split("\n")
    assert ": interrupted (never finished; window" in sli[1], listed
    assert sli[2].strip().startswith("last success "), listed

    answer = json.loads(run("-c", API))
    assert answer["status"] == 200, answer
    jobs = {j["job"]: j for j in answer["body"]["jobs"]}
    last = jobs["sli"]["last_run"]
    assert last["status"] == "interrupted" and last["finished"] is False and last["finished_at"] is None
    assert last["window"]["from"] == stamp[:17] + "00Z"
    assert jobs["sli"]["last_success"] is not None and jobs["sli"]["failures"] == 1
