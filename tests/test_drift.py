"""The drift job end to end on the real model and store: decision, explanation, Evidently report, API."""
from __future__ import annotations

import datetime as dt
import json
import random

import numpy as np
import pytest

from jobs.drift import DriftJob, report_id
from jobs.embeddings import Embedder, EmbeddingError
from monitor.app import create_app
from tests.helpers import auth
from tests.test_jobs import T0, iso
from tests.topics import NEW_TOPIC, sample

# One worker under --dist loadgroup (make test): the tests share drift_env, which took 25-45 s a worker to build
# when they were spread over both.
pytestmark = pytest.mark.xdist_group("drift")

HOUR = dt.timedelta(hours=1)
CRYPTO = ("crypto", "payout", "USDC", "Bitcoin", "Ether", "Solana", "USDT", "staking", "withdraw", "gas fees")


def requests(texts, start, span, service="svc", feature="chat", prefix="r", seed=0, embedding=None, **over):
    rng = random.Random(seed)
    out = []
    for i, text in enumerate(texts):
        ev = {"request_id": f"{prefix}-{i}", "ts": iso(start + span * (i / len(texts))), "service": service,
              "feature": feature, "model": "m", "status": "ok", "latency_ms": rng.uniform(200, 900),
              "input_tokens": rng.randint(10, 60), "output_tokens": rng.randint(20, 200),
              "input_text": text, "output_text": f"Thanks for asking. {text.split('?')[0]}: here is what to do.",
              **over}
        if embedding is not None:
            ev["input_embedding"] = embedding(i)
        out.append(ev)
    return out


@pytest.fixture(scope="session")  # not module: xdist interleaves modules on a worker, which would rebuild it
def drift_env(chdb_dir):
    """One store for the module: a 3-day reference and a current hour for three strata."""
    import uuid

    from monitor.foundation import migrate
    from monitor.foundation.clock import ManualClock
    from monitor.foundation.config import load_config
    from monitor.foundation.storage import Store
    cfg = load_config(env={}, overrides={
        "clickhouse": {"url": f"chdb://{chdb_dir}", "database": f"t_drift_{uuid.uuid4().hex[:8]}"},
        "drift": {"windows": ["1h"], "sample_size": 400, "min_samples": 100}})
    store = Store.from_config(cfg)
    migrate.upgrade(store, cfg)
    clock = ManualClock(T0 + HOUR + dt.timedelta(minutes=2))
    app = create_app(cfg, store, clock)
    svc = app.extensions["nlpmon"]
    ref_start, ref_span = T0 - dt.timedelta(days=3), dt.timedelta(days=3)
    rng = np.random.default_rng(5)
    batches = [
        # "chat": 30% of the current hour is about crypto payouts, a topic the reference never saw.
        requests(sample(500, 1), ref_start, ref_span, prefix="ref"),
        requests(sample(300, 2, new_share=0.3), T0, HOUR, prefix="cur"),
        # "stable": the same pool on both sides.
        requests(sample(500, 3), ref_start, ref_span, feature="stable", prefix="sref"),
        requests(sample(300, 4), T0, HOUR, feature="stable", prefix="scur"),
        # "quiet": too little traffic in the current hour.
        requests(sample(500, 5), ref_start, ref_span, feature="quiet", prefix="qref"),
        requests(sample(40, 6), T0, HOUR, feature="quiet", prefix="qcur"),
        # "vectors": the client sends its own 8-dimensional input embeddings.
        requests(sample(200, 7), ref_start, ref_span, feature="vectors", prefix="vref",
                 embedding=lambda i: rng.normal(size=8).round(4).tolist()),
        requests(sample(150, 8), T0, HOUR, feature="vectors", prefix="vcur",
                 embedding=lambda i: rng.normal(size=8).round(4).tolist()),
    ]
    for b in batches:
        result = svc.ingestor.ingest("requests", b)
        assert result.rejected == 0, result
    job = DriftJob(store, cfg, clock, HOUR)
    run = job.run()
    assert run.status == "ok", run.error
    keys = {scope: svc.keys.create(scope, [scope])[1] for scope in ("read", "ingest")}
    yield cfg, store, clock, app, job, keys
    store.command(f"DROP DATABASE IF EXISTS `{cfg.clickhouse.database}`")
    store.close()


def reports(store):
    return {r["feature"]: r for r in store.query_dicts(
        "SELECT feature, report_id, status, drift_detected, summary, explanation, snapshot FROM drift_reports FINAL "
        "WHERE ts = {end:DateTime64(3, 'UTC')}", {"end": T0 + HOUR})}


def point(store, metric, **labels):
    cond = " ".join(f"AND labels['{k}'] = '{v}'" for k, v in labels.items())
    return store.scalar(f"SELECT if(count() = 0, NULL, argMax(value, computed_at)) FROM metric_points WHERE metric = '{metric}' "
                        f"AND window = '1h' AND ts = toDateTime64('{T0 + HOUR:%Y-%m-%d %H:%M:%S}', 3, 'UTC') {cond}")


def test_topic_shift_is_detected_and_explained(drift_env):
    cfg, store, *_ = drift_env
    r = reports(store)["chat"]
    assert r["status"] == "ok" and r["drift_detected"]
    summary = json.loads(r["summary"])
    assert summary["samples"] == {"reference": 400, "current": 300}
    assert summary["sides"]["input"]["detected"]
    # Beside the embeddings, the language mix of every request of the two windows: the same (English) here.
    mix = summary["language_mix"]
    assert mix["samples"]["current"] == 300 and mix["samples"]["reference"] > 0 and not mix["shifted"]
    assert sum(mix["current"].values()) == pytest.approx(1.0)
    assert point(store, "embedding_drift_detected", service="svc", feature="chat", text="input",
                 method="combined") == 1.0
    auc = point(store, "embedding_drift_score", service="svc", feature="chat", text="input", method="domain_classifier")
    assert auc > 0.6
    # What changed: the farthest texts and the biggest new cluster are about the new topic.
    ex = json.loads(r["explanation"])["input"]
    assert 0.15 < ex["novel_share"] < 0.5
    assert all(any(w in f["text"] for w in CRYPTO) for f in ex["farthest"][:5])
    assert ex["clusters"] and all(any(w in t for w in CRYPTO) for t in ex["clusters"][0]["examples"])
    new_texts = {t.split("{")[0] for t in NEW_TOPIC}
    assert any(f["text"].startswith(tuple(new_texts)) for f in ex["farthest"])


def test_same_pool_is_not_drift_and_few_requests_are_insufficient(drift_env):
    cfg, store, *_ = drift_env
    r = reports(store)
    assert r["stable"]["status"] == "ok" and not r["stable"]["drift_detected"]
    assert point(store, "embedding_drift_detected", service="svc", feature="stable", text="input",
                 method="combined") == 0.0
    assert r["quiet"]["status"] == "insufficient_data" and r["quiet"]["snapshot"] == ""
    assert json.loads(r["quiet"]["summary"])["samples"] == {"reference": 400, "current": 40}
    assert point(store, "embedding_drift_current_samples", service="svc", feature="quiet") == 40
    assert point(store, "embedding_drift_detected", service="svc", feature="quiet", text="input",
                 method="combined") is None


def test_client_embeddings_are_used_as_given(drift_env):
    cfg, store, *_ = drift_env
    summary = json.loads(reports(store)["vectors"]["summary"])
    assert "input_embedding as sent" in summary["embedding_source"]
    from evidently.core.report import Snapshot
    snap = Snapshot.loads(reports(store)["vectors"]["snapshot"])
    dims = {m["config"]["embeddings_name"]: m for m in snap.dict()["metrics"] if "embeddings_name" in m["config"]}
    assert set(dims) == {"input", "output"}


def test_snapshot_reloads_with_numeric_drift_and_same_score(drift_env):
    cfg, store, *_ = drift_env
    from evidently.core.report import Snapshot

    from jobs.drift_methods import embedding_scores, numeric_drift
    r = reports(store)["chat"]
    snap = Snapshot.loads(r["snapshot"])
    assert set(numeric_drift(snap)) == {"latency_ms", "input_tokens", "output_tokens", "cost_usd"}
    summary = json.loads(r["summary"])
    # The same method on the same rows; Evidently's own frame handling moves the AUC in the 4th decimal.
    assert embedding_scores(snap)["input"] == pytest.approx(
        summary["sides"]["input"]["methods"]["domain_classifier"]["score"], abs=1e-3)


def test_rerun_replaces_reports_and_is_deterministic(drift_env):
    cfg, store, clock, app, job, _ = drift_env
    before = {f: (r["report_id"], r["summary"]) for f, r in reports(store).items()}
    encoded = job.embedder.encoded
    assert job.run(since=T0).status == "ok"
    after = {f: (r["report_id"], r["summary"]) for f, r in reports(store).items()}
    assert after == before
    assert job.embedder.encoded == encoded  # every text came from the cache
    assert before["chat"][0] == report_id("svc", "chat", "1h", T0 + HOUR)


def test_reports_api(drift_env):
    cfg, store, clock, app, job, keys = drift_env
    c = app.test_client()
    assert c.get("/v1/reports").status_code == 401
    assert c.get("/v1/reports", headers=auth(keys["ingest"])).status_code == 403
    listed = c.get("/v1/reports?service=svc&feature=chat", headers=auth(keys["read"])).get_json()["reports"]
    # The current hour, then the hours before it that the first run caught up (newest first).
    assert [r["ts"] for r in listed][:2] == ["2026-11-24T09:00:00Z", "2026-11-24T08:00:00Z"]
    assert listed[0]["drift_detected"] and listed[0]["window"] == "1h"
    latest = "/v1/reports?service=svc&from=2026-11-24T09:00:00Z"
    assert len(c.get(latest, headers=auth(keys["read"])).get_json()["reports"]) == 4
    assert [r["feature"] for r in c.get(latest + "&detected=true", headers=auth(keys["read"]))
            .get_json()["reports"]] == ["chat"]
    assert c.get("/v1/reports?limit=0", headers=auth(keys["read"])).status_code == 400
    one = c.get(f"/v1/reports/{listed[0]['id']}", headers=auth(keys["read"])).get_json()
    assert one["explanation"]["input"]["farthest"]
    page = c.get(listed[0]["html_url"], headers=auth(keys["read"]))
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "Drift svc/chat" in html and "Texts farthest from the reference" in html
    # Evidently's page: embedding drift of both text sides and value drift of the numeric columns.
    assert html.count("Drift in embeddings") == 2
    assert all(c in html for c in ("latency_ms", "input_tokens", "output_tokens", "cost_usd"))
    assert c.get(listed[0]["html_url"]).status_code == 401
    assert c.get("/reports/nope", headers=auth(keys["read"])).status_code == 404
    quiet = c.get("/v1/reports?feature=quiet", headers=auth(keys["read"])).get_json()["reports"][0]
    assert quiet["ts"] == "2026-11-24T09:00:00Z"
    assert quiet["status"] == "insufficient_data"
    assert c.get(quiet["html_url"], headers=auth(keys["read"])).status_code == 404


def test_explanation_texts_are_escaped_in_the_page(drift_env):
    cfg, store, clock, app, job, keys = drift_env
    rid = reports(store)["chat"]["report_id"]
    row = store.query_dicts("SELECT * FROM drift_reports FINAL WHERE report_id = {id:String}", {"id": rid})[0]
    ex = json.loads(row["explanation"])
    ex["input"]["farthest"][0]["text"] = "<script>alert('x')</script>"
    row["explanation"] = json.dumps(ex)
    row["created_at"] = clock.now() + dt.timedelta(seconds=1)
    store.insert("drift_reports", [list(row.values())], list(row))
    html = app.test_client().get(f"/reports/{rid}", headers=auth(keys["read"])).get_data(as_text=True)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<script>alert('x')</script>" not in html


def test_embedding_cache(make_config, make_store, clock):
    cfg = make_config()
    store = make_store(cfg)
    emb = Embedder(store, cfg, clock)
    texts = ["where is my parcel", "reset my password", "where is my parcel"]
    first = emb.embed(texts)
    assert first.shape == (3, 384) and emb.encoded == 2
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first[0], first[2])
    again = Embedder(store, cfg, clock)
    second = again.embed(list(reversed(texts)))
    assert again.encoded == 0 and np.allclose(second[::-1], first)
    assert store.scalar("SELECT count() FROM embedding_cache") == 2
    # Unrelated sentences are far apart, paraphrases close: it is the real model.
    a, b, c = emb.embed(["How do I reset my password?", "I forgot my password, how can I change it?",
                         "The weather in Lisbon is sunny today."])
    assert a @ b > 0.6 > a @ c


def test_missing_model_is_a_clear_error(make_config, make_store, clock, tmp_path):
    cfg = make_config(embeddings={"model_path": str(tmp_path / "no-such-model")})
    with pytest.raises(EmbeddingError, match="embeddings.model_path"):
        Embedder(make_store(cfg), cfg, clock).check()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    cfg = make_config(embeddings={"model_path": str(tmp_path / "broken")})
    with pytest.raises(EmbeddingError, match="cannot load"):
        Embedder(make_store(cfg), cfg, clock).check()
    # What serve checks at start-up without loading the model: the same errors, named the same way.
    # (check_files reads no store.)
    with pytest.raises(EmbeddingError, match="embeddings.model_path: .* no modules.json"):
        Embedder(None, cfg, clock).check_files()
    cfg = make_config(embeddings={"model_path": str(tmp_path / "no-such-model")})
    with pytest.raises(EmbeddingError, match="embeddings.model_path: .* is not a directory"):
        Embedder(None, cfg, clock).check_files()
    Embedder(None, make_config(), clock).check_files()  # the packaged model passes



def test_windows_cadence_and_targets_per_feature(drift_env):
    cfg, store, clock, *_ = drift_env
    custom = cfg.model_copy(update={"drift": cfg.drift.model_copy(update={"targets": [
        type(cfg.drift).model_fields["targets"].annotation.__args__[0].model_validate(t) for t in (
            {"service": "svc", "feature": "chat", "windows": ["1h", "1d"], "every": "1h",
             "reference": {"from": "2026-11-21T08:00:00Z", "to": "2026-11-22T08:00:00Z"}},
            {"service": "svc", "feature": "quiet", "enabled": False})]})})
    job = DriftJob(store, custom, clock, HOUR)
    plan = {(f, w, end.hour) for _, f, w, _, end in job.plan(T0 - dt.timedelta(hours=2), T0 + HOUR)}
    # chat: a trailing day every hour besides the hour; quiet: off; the rest: the defaults (1h only here).
    assert ("chat", "1d", 9) in plan and ("chat", "1d", 8) in plan and ("chat", "1h", 9) in plan
    assert not {p for p in plan if p[0] == "quiet"}
    assert ("stable", "1h", 9) in plan and not {p for p in plan if p[0] == "stable" and p[1] == "1d"}
    assert job.reference_range("svc", "chat", T0) == (dt.datetime(2026, 11, 21, 8, tzinfo=dt.timezone.utc),
                                                      dt.datetime(2026, 11, 22, 8, tzinfo=dt.timezone.utc))
    assert job.reference_range("svc", "stable", T0) == (T0 - dt.timedelta(days=7), T0)


def test_bfloat16_vectors_match_float32_and_are_cached_apart(make_config, make_store, clock):
    texts = ["Where is my parcel?", "How do I connect my crypto wallet to receive USDC payouts?",
             "Refunds reach the original payment method 5-10 business days after the return is scanned."]
    f32 = make_config(embeddings={"precision": "float32"})
    bf16 = make_config(embeddings={"precision": "bfloat16"})
    e32, e16 = Embedder(make_store(f32), f32, clock), Embedder(make_store(bf16), bf16, clock)
    assert e16.model_id == e32.model_id + ":bfloat16"
    cos = (e32.embed(texts) * e16.embed(texts)).sum(axis=1)
    assert cos.min() > 0.999


def test_the_drift_page_shows_the_language_mix_beside_the_embeddings(drift_env):
    from tests.test_dashboards import sign_in
    cfg, store, clock, app, job, keys = drift_env
    rid = reports(store)["chat"]["report_id"]
    c = app.test_client()
    assert sign_in(c, keys["read"]).status_code == 302
    html = c.get(f"/drift?service=svc&feature=chat&window=1h&period=custom&from=2026-11-24T00:00:00Z"
                 f"&to=2026-11-24T12:00:00Z&report={rid}").get_data(as_text=True)
    mix = json.loads(reports(store)["chat"]["summary"])["language_mix"]
    said = "steady" if "p_value" in mix else "not judged"  # the test data is English and und only
    assert 'id="language-mix"' in html and f"Language mix of the inputs: {said}" in html
    assert 'data-col="language_mix"' in html and all(f'data-language="{k}"' in html for k in mix["current"])
