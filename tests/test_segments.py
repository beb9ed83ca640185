"""Segments: each request counted per language, region, tenant and promoted tag (one dimension at a time),
the sli job's per-segment series equal to the raw rows, under the cardinality budget."""
from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest

from monitor.app import create_app
from monitor.foundation.config import ConfigError, load_config
from monitor.foundation.tables import rollups
from monitor.scheduler import build_jobs
from tests.helpers import auth, request_event

T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.timezone.utc)
QUESTIONS = {"de": "Wo ist mein Paket? Es sollte gestern ankommen.",
             "fr": "Où est mon colis ? Il devait arriver hier.",
             "en": "Where is my parcel? It was supposed to arrive yesterday.",
             "und": "ok"}


def _z(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.fast
@pytest.mark.parametrize("overrides, key, says", [
    ({"segments": {"tags": ["region"]}}, "segments.tags", "collides with the built-in label 'region'"),
    ({"segments": {"tags": ["language"]}}, "segments.tags", "collides with the built-in label 'language'"),
    ({"segments": {"tags": ["plan tier"]}}, "segments.tags", "is not a tag key"),
    ({"segments": {"tags": ["plan"]}, "cardinality": {"limits": {"tags": {"tier": 5}}}},
     "cardinality.limits.tags.tier", "not a tag promoted by segments.tags"),
])
def test_a_promoted_tag_that_collides_or_a_limit_for_no_tag_is_a_config_error_naming_it(overrides, key, says):
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides=overrides)
    assert f"config key '{key}'" in str(err.value) and says in str(err.value)


@pytest.fixture
def segmented_app(make_config, make_store, clock):
    config = make_config(segments={"tags": ["plan"]}, cardinality={"limits": {"tags": {"plan": 3}}})
    store = make_store(config)
    app = create_app(config, store, clock)
    keys = app.extensions["nlpmon"].keys
    return app, store, {"ingest": keys.create("app", ["ingest"])[1], "read": keys.create("reader", ["read"])[1]}


def _traffic(seed: int = 7, n: int = 600) -> list[dict]:
    """Requests of one feature over two hours: languages mostly detected (one tenant sends its own), tenants,
    plans, error rates and latencies that differ by segment."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        lang = rng.choice(["de", "fr", "en", "und"], p=[0.3, 0.2, 0.4, 0.1])
        tenant = rng.choice(["acme", "globex", "initech"])
        plan = rng.choice(["free", "pro", "team"])
        fails = rng.random() < {"de": 0.2, "fr": 0.05, "en": 0.02, "und": 0.1}[lang]
        row = request_event(i, ts=(T0 + dt.timedelta(seconds=int(rng.integers(0, 7200)))).isoformat(),
                            status="error" if fails else "ok", latency_ms=float(rng.gamma(2.0, 400.0)),
                            ttft_ms=None, input_text=QUESTIONS[lang], tenant=tenant, tags={"plan": plan, "os": "ios"})
        if tenant == "initech" and lang != "und":
            row["language"] = lang  # this tenant's app says its users' language itself
        rows.append(row)
    return rows


def test_sli_series_per_language_tenant_and_promoted_tag_equal_the_raw_rows(segmented_app, clock):
    app, store, keys = segmented_app
    client = app.test_client()
    rows = _traffic()
    assert client.post("/v1/requests", json=rows, headers=auth(keys["ingest"])).json["accepted"] == len(rows)
    clock.set(T0 + dt.timedelta(hours=2, minutes=5))
    assert build_jobs(store, app.extensions["nlpmon"].config, clock)["sli"].run(
        since=T0 - dt.timedelta(hours=1)).status == "ok"

    raw = store.query_dicts("SELECT language, tenant, tags['plan'] AS plan, status, latency_ms, ts FROM requests")
    assert len(raw) == len(rows)
    for by, of in (("language", lambda r: r["language"]), ("tenant", lambda r: r["tenant"]),
                   ("plan", lambda r: r["plan"])):
        body = client.get(f"/v1/metrics?metric=error_rate&service=support-bot&feature=answer&by={by}&step=1h"
                          f"&from={_z(T0)}&to={_z(T0 + dt.timedelta(hours=2))}",
                          headers=auth(keys["read"])).json
        assert "series" in body, body
        got = {(s["labels"][by], p[0]): p[1] for s in body["series"] for p in s["points"]}
        expected = {}
        for hour in range(2):
            lo, hi = T0 + dt.timedelta(hours=hour), T0 + dt.timedelta(hours=hour + 1)
            in_hour = [r for r in raw if lo <= r["ts"] < hi]
            for value in {of(r) for r in in_hour}:
                statuses = np.array([r["status"] == "error" for r in in_hour if of(r) == value])
                expected[(value, hi.strftime("%Y-%m-%dT%H:%M:%SZ"))] = pytest.approx(statuses.mean())
        assert got == expected, by
        assert all(set(s["labels"]) == {"service", "feature", by} for s in body["series"])
    # The languages are the detected ones, und for what cannot tell, and those sent.
    assert {r["language"] for r in raw} == {"de", "fr", "en", "und"}
    # Percentiles per segment: t-digest over the same rows (approximate, as every percentile here).
    body = client.get(f"/v1/metrics?metric=latency_p50_ms&service=support-bot&feature=answer&by=language&step=1d"
                      f"&from={_z(T0)}&to={_z(T0 + dt.timedelta(days=1))}",
                      headers=auth(keys["read"])).json
    assert body["series"] == []  # the day is not over: no 1d window ended yet
    body = client.get(f"/v1/metrics?metric=thumbs_up_rate&service=support-bot&feature=answer&by=language",
                      headers=auth(keys["read"]))
    assert body.status_code == 400 and "not kept per segment" in body.json["message"]
    body = client.get("/v1/metrics?metric=requests&service=support-bot&feature=answer&by=language"
                      f"&from={_z(T0)}&to={_z(T0 + dt.timedelta(hours=2))}",
                      headers=auth(keys["read"])).json
    assert body["window"] == "1h"  # the finest window kept per segment, when no step is asked for
    assert sum(p[1] for s in body["series"] for p in s["points"]) == len(rows)


def test_the_budget_counts_a_promoted_tag_beyond_its_limit_as_overflow_and_the_raw_tags_keep_it(segmented_app):
    app, store, keys = segmented_app
    rows = [request_event(i, tags={"plan": f"plan-{i % 5}"}, input_text=QUESTIONS["en"]) for i in range(50)]
    assert app.test_client().post("/v1/requests", json=rows, headers=auth(keys["ingest"])).json["accepted"] == 50
    counted = dict(store.query("SELECT value, sum(requests) FROM segments_1m WHERE dimension = 'plan' GROUP BY value"))
    assert counted == {"plan-0": 10, "plan-1": 10, "plan-2": 10, "__overflow__": 20}  # limits.tags.plan: 3
    assert sorted(store.query("SELECT tags['plan'], count() FROM requests GROUP BY 1")) == [
        (f"plan-{i}", 10) for i in range(5)]
    assert app.extensions["nlpmon"].ingestor.budget.overflowed[("support-bot", "plan")] == 20
    # A tag not promoted is in no segment.
    assert store.scalar("SELECT count() FROM segments_1m WHERE dimension = 'os'") == 0


def test_a_rebuild_counts_the_segments_as_the_views_did(segmented_app):
    app, store, keys = segmented_app
    rows = _traffic(seed=3, n=200)
    app.test_client().post("/v1/requests", json=rows, headers=auth(keys["ingest"]))
    before = sorted(store.query("SELECT minute, dimension, value, sum(requests), sum(status_error) FROM segments_1h "
                                "GROUP BY ALL"))
    assert rollups.rebuild(store, T0, T0 + dt.timedelta(days=1)) == 1
    after = sorted(store.query("SELECT minute, dimension, value, sum(requests), sum(status_error) FROM segments_1h "
                               "GROUP BY ALL"))
    assert after == before and sum(r[3] for r in before if r[1] == "language") == 200


def test_metrics_page_leaves_out_segment_series(segmented_app, clock):
    app, store, keys = segmented_app
    client = app.test_client()
    client.post("/v1/requests", json=_traffic(n=100), headers=auth(keys["ingest"]))
    clock.set(T0 + dt.timedelta(hours=2, minutes=5))
    build_jobs(store, app.extensions["nlpmon"].config, clock)["sli"].run(since=T0)
    page = client.get("/metrics", headers=auth(keys["read"])).get_data(as_text=True)
    assert 'feature="answer"' in page and "language=" not in page and "plan=" not in page


def test_a_live_rule_by_language_pages_for_the_one_language_that_regressed(make_config, make_store, clock):
    from alerts.engine import AlertEngine
    from tests.loopback import Recorder
    rule = {"name": "LanguageErrors", "metric": "error_rate", "window": "10m", "op": ">", "threshold": 0.1,
            "by": ["service", "feature", "language"], "for": "0s", "min_requests": 20, "labels": {"severity": "page"},
            "annotations": {"summary": "{{ $labels.language }}: error rate {{ $value }}"}}
    with Recorder() as hook:
        config = make_config(alerts={
            "default_rules": False, "rules": [rule], "slo_rules": False, "system": {"enabled": False},
            "receivers": [{"name": "hook", "webhook": {"url": hook.url}}],
            "route": {"receiver": "hook", "group_by": ["alertname", "language"], "group_wait": "0s",
                      "group_interval": "1m", "repeat_interval": "4h"}})
        store = make_store(config)
        clock.set(T0 + dt.timedelta(minutes=10, microseconds=371))
        app = create_app(config, store, clock)
        # German answers fail one time in three; English and French almost never: the feature's error rate
        # (about 7%) stays under the rule's 10%, so only a rule by language can see it.
        rows = []
        for i in range(300):
            lang = ("de", "en", "en", "en", "fr")[i % 5]
            fails = (lang == "de" and i % 3 == 0) or (lang != "de" and i % 97 == 0)
            rows.append(request_event(i, ts=(T0 + dt.timedelta(seconds=2 * i)).isoformat(), input_text=QUESTIONS[lang],
                                      status="error" if fails else "ok"))
        assert app.extensions["nlpmon"].ingestor.ingest("requests", rows).rejected == 0
        assert AlertEngine(store, config, clock).run().status == "ok"
        firing = [a for p in hook.take() for a in p["alerts"] if a["status"] == "firing"]
    assert [a["labels"]["language"] for a in firing] == ["de"]
    assert firing[0]["labels"]["feature"] == "answer" and firing[0]["annotations"]["summary"].startswith("de: ")


@pytest.mark.fast
@pytest.mark.parametrize("by, says", [
    (["service", "model", "language"], "goes with service and feature only"),
    (["service", "language", "tenant"], "goes with service and feature only"),
    (["service", "plan"], "one segment dimension (language, region, tenant)"),
])
def test_a_live_rule_by_segment_is_checked_at_load(by, says):
    from alerts.rules import load_rules
    rule = {"name": "R", "metric": "error_rate", "window": "5m", "op": ">", "threshold": 0.1, "by": by,
            "labels": {"severity": "page"}}
    # plan is not promoted here (the shipped monitor.yaml promotes the demo's tags)
    config = load_config(env={}, overrides={"alerts": {"default_rules": False, "rules": [rule]},
                                            "segments": {"tags": []}})
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_rules(config)


@pytest.mark.fast
def test_the_language_mix_test_finds_a_shift_and_stays_quiet_on_noise():
    from jobs.drift_methods import language_mix
    shares = {"en": 0.6, "de": 0.2, "fr": 0.15, "ja": 0.05}
    quiet = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        ref = dict(zip(shares, rng.multinomial(3000, list(shares.values())).tolist()))
        cur = dict(zip(shares, rng.multinomial(800, list(shares.values())).tolist()))
        quiet += not language_mix(ref, cur)["shifted"]
    assert quiet >= 98  # level 1%, and a shift must move 5% of the traffic
    rng = np.random.default_rng(1)
    ref = dict(zip(shares, rng.multinomial(3000, list(shares.values())).tolist()))
    cur = dict(zip(shares, rng.multinomial(800, [0.45, 0.35, 0.15, 0.05]).tolist()))  # German users arrive
    mix = language_mix(ref, cur)
    assert mix["shifted"] and mix["p_value"] < 1e-6 and mix["total_variation"] == pytest.approx(0.15, abs=0.04)
    assert mix["current"]["de"] == pytest.approx(0.35, abs=0.04)
    assert language_mix(ref, {})["reason"].startswith("no requests")
    assert "one language" in language_mix({"en": 500}, {"en": 300, "de": 1})["reason"]


def test_a_segment_series_never_stands_for_its_feature_volume_in_a_points_rule(segmented_app, clock):
    """min_requests of a points rule counts the feature's requests, not one language's (the per-segment series
    share the feature's service and feature labels)."""
    from alerts.reads import Reads
    from monitor.foundation.config import AlertRule
    app, store, keys = segmented_app
    client = app.test_client()
    client.post("/v1/requests", json=_traffic(n=400), headers=auth(keys["ingest"]))
    clock.set(T0 + dt.timedelta(hours=2, minutes=5))
    build_jobs(store, app.extensions["nlpmon"].config, clock)["sli"].run(since=T0)
    rule = AlertRule.model_validate({"name": "R", "metric": "error_rate", "window": "1h", "source": "points",
                                     "by": ["service", "feature"], "over": "2h", "min_requests": 150,
                                     "threshold": 0.0, "labels": {"severity": "ticket"}})
    volumes = Reads(store, app.extensions["nlpmon"].config, clock.now())._volumes(rule)
    assert volumes[(("feature", "answer"), ("service", "support-bot"))] > 150


def test_the_detail_page_shows_the_segments_with_most_requests_and_says_how_many_more(segmented_app, clock):
    from dashboards.kpis import SEGMENTS_SHOWN
    from tests.test_dashboards import sign_in
    app, store, keys = segmented_app
    rows = [request_event(i, ts=(T0 + dt.timedelta(minutes=i % 50)).isoformat(), tenant=f"tenant-{i % 20:02d}",
                          input_text=QUESTIONS["en"]) for i in range(20 * 10 + 19 * 5)]  # tenant-19 the smallest
    client = app.test_client()
    assert client.post("/v1/requests", json=rows, headers=auth(keys["ingest"])).json["accepted"] == len(rows)
    clock.set(T0 + dt.timedelta(hours=2))
    assert sign_in(client, keys["read"]).status_code == 302
    page = client.get("/detail?service=support-bot&feature=answer&period=24h").get_data(as_text=True)
    table = page[page.index('data-dimension="tenant"'):]
    table = table[:table.index("</table>")]
    assert table.count("data-segment=") == SEGMENTS_SHOWN and 'data-segment="tenant-19"' not in table
    assert f'data-more="{20 - SEGMENTS_SHOWN}"' in page
