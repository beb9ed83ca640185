"""GET /metrics passes ``promtool check metrics`` (Prometheus' own linter) without a warning.

Other tools alert on /metrics, so it follows Prometheus' conventions: base units, ``_total``
on counters only, quantiles as a label. The output checked is the real one, after the sli,
slo and cost jobs ran on real traffic; one more test feeds every catalogue metric through the
same mapping (dashboards.series.EXPOSED), so metrics this traffic does not produce (drift,
review, reconcile, incident KPIs) are linted too.
"""
from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from dashboards.series import EXPOSED, exposed, metric_families
from monitor.foundation.metrics import METRICS
from tests.helpers import auth
from tests.test_jobs import T0, iso
from tests.test_series import served_after_jobs

PROMTOOL = Path("/usr/bin/promtool")  # Debian's prometheus package (`make tools`)


def promtool_check(text: str) -> subprocess.CompletedProcess:
    assert PROMTOOL.exists(), f"{PROMTOOL} is not installed: `make test` installs Debian's prometheus package"
    return subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True,
                          check=False, timeout=60)


def assert_clean(text: str) -> None:
    r = promtool_check(text)
    assert (r.returncode, r.stdout + r.stderr) == (0, ""), f"promtool check metrics:\n{r.stdout}{r.stderr}"


@pytest.fixture(scope="module")
def scraped(chdb_dir):
    """(app, read key, /metrics text) after real traffic, feedback and the sli, slo and cost jobs."""
    slos = [{"name": "chat-availability", "service": "svc", "feature": "chat", "objective": 99.5,
             "sli": "availability", "period": "7d"},
            {"name": "chat-latency", "service": "svc", "feature": "chat", "objective": 99, "sli": "latency",
             "threshold_ms": 2000}]
    at = iso(T0 + dt.timedelta(minutes=30))
    feedback = [{"request_id": "r-9", "ts": at, "kind": "thumbs", "value": 1},
                {"request_id": "r-10", "ts": at, "kind": "task_success", "value": 1}]
    with served_after_jobs(chdb_dir, "promtool", slos, 300, 100, feedback) as app:
        _, key = app.extensions["nlpmon"].keys.create("reader", ["read"])
        r = app.test_client().get("/metrics", headers=auth(key))
        assert r.status_code == 200
        yield app, key, r.get_data(as_text=True)


def sample(text: str, line_start: str) -> float:
    """The value of the one sample line starting with ``line_start`` (name and full label set)."""
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(line_start + " ")]
    assert len(values) == 1, (line_start, values)
    return float(values[0])


def test_real_exposition_passes_promtool(scraped):
    _, _, text = scraped
    assert_clean(text)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    for family, typ in {"nlpmon_latency_seconds": "summary", "nlpmon_time_to_first_token_seconds": "summary",
                        "nlpmon_requests_in_window": "gauge", "nlpmon_cost_usd": "gauge",
                        "nlpmon_slo_burn_rate": "gauge", "nlpmon_slo_error_budget_remaining": "gauge",
                        "nlpmon_thumbs_up_rate": "gauge", "nlpmon_ingested_events_total": "counter",
                        "nlpmon_job_last_duration_seconds": "gauge", "nlpmon_process_cpu_seconds_total": "counter",
                        }.items():
        assert types.get(family) == typ, family
    # The old names are gone from /metrics (they stay in the JSON API, below).
    assert not re.search(r"^nlpmon_\w+_ms[{ ]", text, flags=re.M)
    assert not re.search(r"^nlpmon_requests[{ ]", text, flags=re.M)


def latest(app, key, metric: str, query: str) -> float:
    """The newest value of the catalogue metric's series, read through GET /v1/metrics."""
    r = app.test_client().get(f"/v1/metrics?metric={metric}&{query}&from={iso(T0)}", headers=auth(key))
    assert r.status_code == 200, r.json
    [series] = r.json["series"]
    return series["points"][-1][1]


def test_exposed_values_are_the_catalogue_values_in_base_units(scraped):
    app, key, text = scraped
    chat = 'feature="chat",{}service="svc",window="1h"'
    for metric, q in (("latency_p50_ms", "0.5"), ("latency_p90_ms", "0.9"), ("latency_p95_ms", "0.95"),
                      ("latency_p99_ms", "0.99")):
        ms = latest(app, key, metric, "step=1h&service=svc&feature=chat")
        assert sample(text, "nlpmon_latency_seconds{" + chat.format(f'quantile="{q}",') + "}") == ms / 1000
    for metric, q in (("ttft_p50_ms", "0.5"), ("ttft_p95_ms", "0.95")):
        ms = latest(app, key, metric, "step=1h&service=svc&feature=chat")
        assert sample(text, "nlpmon_time_to_first_token_seconds{" + chat.format(f'quantile="{q}",') + "}") == ms / 1000
    assert sample(text, 'nlpmon_latency_seconds{quantile="0.95",window="1h"}') == \
        latest(app, key, "latency_p95_ms", "step=1h") / 1000
    assert sample(text, "nlpmon_requests_in_window{" + chat.format("") + "}") == 400
    assert sample(text, 'nlpmon_requests_in_window{feature="chat",model="m2",service="svc",window="1h"}') == 100
    assert sample(text, 'nlpmon_cost_usd{window="1h"}') == 400 * 0.25
    assert sample(text, "nlpmon_error_rate{" + chat.format("") + "}") == 60 / 400
    assert sample(text, 'nlpmon_slo_burn_rate{feature="chat",service="svc",sli="availability",'
                        'slo="chat-availability",window="1h"}') == pytest.approx((60 / 400) / 0.005)
    assert sample(text, 'nlpmon_ingested_events_total{kind="requests"}') == 400


def synthetic_rows() -> list[tuple]:
    """One point of every catalogue metric, with the labels its job writes."""
    labels = {"slo": {"slo": "a", "service": "svc", "sli": "availability", "feature": "chat"},
              "drift": {"service": "svc", "feature": "chat", "text": "input", "method": "mmd"},
              "reconcile": {"table": "requests_1m"}, "incident_kpis": {"severity": "page"}}
    rows = []
    for metric, (job, windows, _) in METRICS.items():
        window = next((w for w in windows if w != "period"), "7d")
        if metric == "cardinality_overflow_requests":
            extra = {"service": "svc", "dimension": "feature"}
        else:
            extra = labels.get(job, {"service": "svc", "feature": "chat"})
        rows.append((metric, window, extra, 1234.5))
    return rows


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def collect(self):
        return metric_families(self.rows)


def test_every_catalogue_metric_passes_promtool():
    assert set(EXPOSED) <= set(METRICS), set(EXPOSED) - set(METRICS)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Rows(synthetic_rows()))
    text = generate_latest(registry).decode()
    assert_clean(text)
    # Each catalogue metric is one distinct sample: no two share a family and a label set.
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) == len({line.rsplit(" ", 1)[0] for line in lines}) == len(METRICS)
    assert sample(text, 'nlpmon_latency_seconds{feature="chat",quantile="0.99",service="svc",window="1m"}') == 1.2345
    assert sample(text, 'nlpmon_incident_mttr_seconds{severity="page",window="7d"}') == 1234.5


def test_promtool_still_catches_what_the_mapping_avoids():
    """The linter sees the old names' problems, so a clean run above means something."""
    old = ("# HELP nlpmon_latency_p95_ms x\n# TYPE nlpmon_latency_p95_ms gauge\nnlpmon_latency_p95_ms 1\n"
           "# HELP nlpmon_latency_seconds x\n# TYPE nlpmon_latency_seconds gauge\n"
           'nlpmon_latency_seconds{quantile="0.95"} 1\n')
    out = promtool_check(old)
    assert out.returncode != 0
    assert "abbreviated units" in out.stdout + out.stderr
    assert 'non-summary metrics should not have "quantile" label' in out.stdout + out.stderr


def test_docs_name_every_renamed_metric():
    """docs/metrics.md's table of /metrics names is EXPOSED (the other metrics keep their name)."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    section = doc.split("## On /metrics", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| `([a-z0-9_]+)(?:\{[^`]*\})?` \|", section, flags=re.M))
    assert {m: exposed(m).family for m in EXPOSED} == rows
