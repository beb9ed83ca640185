"""Demo traffic: valid against the contract, deterministic, incidents visible, loadable by the CLI."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections import Counter

import pytest

from monitor import demo
from monitor.foundation import events
from monitor.foundation.clock import parse_time

END = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
LIMITS = events.Limits(max_text_chars=32768, truncate_text=False, max_future=dt.timedelta(0),
                       max_age=dt.timedelta(days=90))


def sample(days=1.0, rps=0.3, seed=7):
    return list(demo.generate(days, rps, END, seed))


@pytest.mark.fast
def test_every_event_is_valid_and_in_time_order():
    evs = sample()
    kinds = Counter(k for k, _ in evs)
    assert kinds["requests"] > 20000 and kinds["feedback"] > 2000
    for kind, ev in evs:
        row, errors, truncated = events.validate(kind, ev, LIMITS, END)
        assert not errors, (kind, ev, errors)
    ts = [parse_time(ev["ts"]) for k, ev in evs if k == "requests"]
    assert ts == sorted(ts) and ts[0] >= END - dt.timedelta(days=1) and ts[-1] < END
    assert abs(kinds["requests"] - demo.expected_requests(1.0, 0.3)) / kinds["requests"] < 0.2


@pytest.mark.fast
def test_deterministic_per_seed():
    assert sample(0.1, 1, seed=3) == sample(0.1, 1, seed=3)
    assert sample(0.1, 1, seed=3) != sample(0.1, 1, seed=4)


@pytest.mark.fast
def test_incidents_show_in_the_data():
    evs = [e for k, e in sample(2.0, 0.3) if k == "requests"]
    inc = {i["name"]: i for i in demo.incidents(2.0, END)}
    assert len(inc) == 5
    burst = next(i for i in inc.values() if "error" in i["name"])

    def inside(e, i):
        return i["start"] <= parse_time(e["ts"]) < i["end"]

    target = [e for e in evs if e["service"] == burst["service"] and e["feature"] == burst["feature"]]
    during = [e for e in target if inside(e, burst)]
    before = [e for e in target if parse_time(e["ts"]) < burst["start"]]
    err = lambda xs: sum(e["status"] != "ok" for e in xs) / len(xs)  # noqa: E731
    assert err(during) > 0.2 > 0.05 > err(before)
    # German summaries fail in the locale incident; the feature's other languages do not.
    locale = inc["German summaries broken"]
    summaries = [e for e in evs if e["feature"] == "summarize" and inside(e, locale)]
    german = [e for e in summaries if e["language"] == "de"]
    assert german and sum(e["error_type"] == "output_validation" for e in german) > 0
    assert not any(e["error_type"] == "output_validation" for e in evs if e not in german)


def test_cli_demo_loads_through_the_ingest_pipeline(tmp_path):
    # The embedding jobs (drift, grounding proxy) are tested on their own in test_drift.py and
    # test_grounding.py; here they would only add a model load and a minute to the suite.
    env = {**os.environ, "MONITOR_CLICKHOUSE_URL": "chdb://./var/clickhouse", "MONITOR_DRIFT_ENABLED": "false",
           "MONITOR_GROUNDING_ENABLED": "false"}
    env.pop("MONITOR_CONFIG", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "monitor.cli", *a], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    assert run("db", "upgrade").returncode == 0
    p = run("demo", "--days", "0.1", "--rps", "1")
    assert p.returncode == 0, p.stderr
    assert "0 rejected" in p.stderr and "incident" in p.stderr and "demo traffic" in p.stderr  # progress bar
    assert p.stdout.strip().startswith("nlpm_")  # the demo key, printed once
    again = run("demo", "--days", "0.1", "--if-empty")
    assert again.returncode == 0 and "already holds requests" in again.stderr and not again.stdout.strip()
