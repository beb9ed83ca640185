"""Degenerate windows degrade a drift comparison, never fail it (issue 13).

Each class runs on the real model, the real store and real Evidently, as its own (service,
feature) stratum in one store and one job run (small samples: ``sample_size`` 150,
``min_samples`` 20):

1. every answer the same text (a classifier's canned reply), in both windows (and, on the
   vectors, a switch from one canned reply to another);
2. a handful of distinct texts repeated (2 inputs, 3 answers);
3. blank texts on one side: whitespace inputs (the side has too few texts), and empty inputs
   (the sample query leaves such requests out: insufficient data);
4. samples of exactly ``min_samples``;
5. 20,000-character texts (the model reads the first 256 tokens: the inputs, a long shared
   preamble, become one vector);
6. English reference, German current: a real shift, detected.

For each: the run is ``ok``, the row's status is ``ok``, the points that could be computed are
written, and a method that could not run says why in the summary.
"""
from __future__ import annotations

import datetime as dt
import json
import random
import re

import numpy as np
import pandas as pd
import pytest

from jobs import drift_methods
from jobs.drift import DriftJob, report_id
from tests.helpers import auth
from tests.test_drift import HOUR, point, reports, requests
from tests.test_jobs import T0
from tests.topics import sample

pytestmark = pytest.mark.xdist_group("drift_degenerate")  # one worker under --dist loadgroup (make test)

REF_START, REF_SPAN = T0 - dt.timedelta(days=3), dt.timedelta(days=3)
MIN_SAMPLES = 20
CANNED = "Your request has been routed to the billing team."
SWITCHED = "Sorry, I can only help with orders and deliveries."
HANDFUL_IN = ("Classify this ticket.", "Classify this ticket, it is urgent.")
HANDFUL_OUT = ("billing", "shipping", "account")
PREAMBLE = ("You are the support assistant of an online shop. Answer politely, quote the policy that applies, "
            "never invent order numbers or dates, and hand over to a person when asked. ") * 200
LONG = 20_000
GERMAN = (
    "Wo ist mein Paket mit {item}? Es sollte vor {n} Tagen ankommen.",
    "Warum wurde mir mein {plan}-Abo diesen Monat doppelt berechnet?",
    "Wie kann ich {item} zurückschicken, die ich vor {n} Tagen gekauft habe?",
    "Ich habe mein Passwort vergessen und die E-Mail zum Zurücksetzen kommt nie an.",
    "Liefern Sie {item} auch nach {country}?",
    "Meine {item} kam beschädigt an, bekomme ich Ersatz?",
    "Wie aktiviere ich die Zwei-Faktor-Authentifizierung auf meinem {device}?",
    "Kann ich meinen {plan}-Tarif von monatlicher auf jährliche Zahlung umstellen?",
    "Mein Konto wurde nach zu vielen Anmeldeversuchen auf meinem {device} gesperrt.",
    "Wo finde ich die Rechnung vom letzten Monat für den {plan}-Tarif?",
    "Die Sendungsverfolgung für meine {item} wurde seit {n} Tagen nicht aktualisiert.",
    "Ich habe die Rückerstattung für meine {item} immer noch nicht erhalten.",
)
GERMAN_SLOTS = {"item": ("Kopfhörer", "Laufschuhe", "Kaffeemühle", "Schreibtischlampe", "Rucksack", "Winterjacke"),
                "n": ("2", "3", "5", "7", "10"), "plan": ("Basis", "Plus", "Pro", "Team"),
                "country": ("Kanada", "Japan", "Brasilien", "Norwegen", "Mexiko"),
                "device": ("iPhone", "Android-Handy", "iPad", "Laptop", "Tablet")}


def german(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(GERMAN).format(**{k: rng.choice(v) for k, v in GERMAN_SLOTS.items()}) for _ in range(n)]


def answered(events: list[dict], outputs: list[str] | None = None, inputs: dict[int, str] | None = None) -> list[dict]:
    """``events`` with their answers (and some inputs) replaced."""
    for i, e in enumerate(events):
        if outputs is not None:
            e["output_text"] = outputs[i]
        if inputs and i in inputs:
            e["input_text"] = inputs[i]
    return events


def long_question(q: str) -> str:
    """LONG characters: the shared preamble, then the question."""
    tail = " Question: " + q
    return PREAMBLE[:LONG - len(tail)] + tail


def long_answer(q: str) -> str:
    return (f"Thanks for asking: {q} " * 1000)[:LONG]


def degenerate_batches() -> list[list[dict]]:
    """Reference (3 days before T0) and current (the hour after T0) requests of every class."""
    ref_q, cur_q = sample(150, 31), sample(100, 23)  # the same topic mix (±1%): alike, as a stable feature is

    def ref(texts, feature, **kw):
        return requests(texts, REF_START, REF_SPAN, feature=feature, prefix=f"{feature}-ref", **kw)

    def cur(texts, feature, **kw):
        return requests(texts, T0, HOUR, feature=feature, prefix=f"{feature}-cur", **kw)

    long_ref, long_cur = sample(25, 41), sample(22, 42)
    return [
        # (1) a classifier: varied questions, one canned answer, in both windows.
        answered(ref(ref_q, "canned"), [CANNED] * 150), answered(cur(cur_q, "canned"), [CANNED] * 100),
        # (2) two inputs (80/20) and three answers, alike in both windows.
        answered(ref([HANDFUL_IN[i % 5 == 0] for i in range(150)], "handful"),
                 [HANDFUL_OUT[i % 3] for i in range(150)]),
        answered(cur([HANDFUL_IN[i % 5 == 0] for i in range(100)], "handful"),
                 [HANDFUL_OUT[i % 3] for i in range(100)]),
        # (3) blank inputs in the current hour: 90 of 100 are whitespace; and inputs left empty altogether.
        ref(ref_q, "blank"), answered(cur(cur_q, "blank"), inputs={i: "   " for i in range(10, 100)}),
        ref(ref_q, "noinput"), answered(cur(cur_q, "noinput"), inputs={i: "" for i in range(100)}),
        # (4) exactly min_samples on each side.
        ref(ref_q[:MIN_SAMPLES], "tiny"), cur(cur_q[:MIN_SAMPLES], "tiny"),
        # (5) 20,000 characters: a long shared preamble then the question; answers long from the first word.
        answered(ref([long_question(q) for q in long_ref], "long"), [long_answer(q) for q in long_ref]),
        answered(cur([long_question(q) for q in long_cur], "long"), [long_answer(q) for q in long_cur]),
        # (6) English reference, German current hour.
        ref(ref_q, "language"),
        answered(cur(german(100, 25), "language"),
                 [f"Danke für Ihre Frage. {q} So gehen Sie vor." for q in german(100, 25)]),
    ]


@pytest.fixture(scope="session")  # not module: xdist interleaves modules on a worker, which would rebuild it
def degenerate_env(chdb_dir):
    """One store, one drift run over every class (the current hour only)."""
    import uuid

    from monitor.app import create_app
    from monitor.foundation import migrate
    from monitor.foundation.clock import ManualClock
    from monitor.foundation.config import load_config
    from monitor.foundation.storage import Store
    cfg = load_config(env={}, overrides={
        "clickhouse": {"url": f"chdb://{chdb_dir}", "database": f"t_degen_{uuid.uuid4().hex[:8]}"},
        "drift": {"windows": ["1h"], "sample_size": 150, "min_samples": MIN_SAMPLES, "catchup_max": "1h"}})
    store = Store.from_config(cfg)
    migrate.upgrade(store, cfg)
    clock = ManualClock(T0 + HOUR + dt.timedelta(minutes=2))
    app = create_app(cfg, store, clock)
    svc = app.extensions["nlpmon"]
    for batch in degenerate_batches():
        result = svc.ingestor.ingest("requests", batch)
        assert result.rejected == 0, result
    job = DriftJob(store, cfg, clock, HOUR)
    run = job.run()
    keys = {scope: svc.keys.create(scope, [scope])[1] for scope in ("read", "ingest")}
    yield cfg, store, clock, app, job, run, keys
    store.command(f"DROP DATABASE IF EXISTS `{cfg.clickhouse.database}`")
    store.close()


def summary_of(store, feature: str) -> tuple[dict, dict]:
    r = reports(store)[feature]
    assert r["status"] == "ok", (feature, r["status"])
    return r, json.loads(r["summary"])


def methods_written(store, feature: str, side: str) -> set[str]:
    return {m for m in ("domain_classifier", "mmd", "centroid_cosine", "combined")
            if point(store, "embedding_drift_score", service="svc", feature=feature, text=side, method=m) is not None}


def embedding_widgets(snapshot: str) -> set[str]:
    from evidently.core.report import Snapshot
    return {m["config"]["embeddings_name"] for m in Snapshot.loads(snapshot).dict()["metrics"]
            if "embeddings_name" in m["config"]}


def test_degenerate_windows_keep_the_run_ok(degenerate_env):
    cfg, store, clock, app, job, run, keys = degenerate_env
    assert run.status == "ok", run.error
    statuses = {f: r["status"] for f, r in reports(store).items()}
    assert statuses == {"canned": "ok", "handful": "ok", "blank": "ok", "noinput": "ok",
                        "tiny": "ok", "long": "ok", "language": "ok"}


def test_one_canned_answer_is_not_drift(degenerate_env):
    cfg, store, *_ = degenerate_env
    r, s = summary_of(store, "canned")
    assert not r["drift_detected"]
    out = s["sides"]["output"]
    # The classifier (AUC 0.5) and the centroid (distance 0) run and see nothing; MMD has no bandwidth.
    assert out["decided"] and not out["detected"] and out["methods_run"] == 2 and out["votes"] == 0
    assert "constant" in out["methods"]["mmd"]["error"] and out["methods"]["mmd"]["score"] is None
    assert out["methods"]["domain_classifier"]["score"] == pytest.approx(0.5, abs=0.1)
    assert methods_written(store, "canned", "output") == {"domain_classifier", "centroid_cosine", "combined"}
    assert point(store, "embedding_drift_detected", service="svc", feature="canned", text="output",
                 method="combined") == 0.0
    # The input side, ordinary questions, is computed in full.
    assert s["sides"]["input"]["methods_run"] == 3 and not s["sides"]["input"]["detected"]
    assert methods_written(store, "canned", "input") == {"domain_classifier", "mmd", "centroid_cosine", "combined"}
    # The report keeps what it can draw: the input picture and the numeric columns.
    assert "embeddings:output" in s["report_omitted"] and "report_error" not in s
    assert embedding_widgets(r["snapshot"]) == {"input"}
    assert set(s["numeric"]) == {"latency_ms", "input_tokens", "output_tokens", "cost_usd"}


def test_thresholds_on_canned_answers(degenerate_env):
    """Each method's threshold on constant samples (real model vectors; the job caches one vector per text)."""
    cfg, store, clock, app, job, *_ = degenerate_env
    canned, switched = job.embeddings().embed([CANNED, SWITCHED])
    ref = np.tile(canned, (150, 1))
    same = drift_methods.compare(ref, np.tile(canned, (100, 1)))
    assert same.ran == ["domain_classifier", "centroid_cosine"] and same.decided and same.votes == 0
    # Another canned answer: both methods that can run see it, and the explanation names it.
    other = np.tile(switched, (100, 1))
    switch = drift_methods.compare(ref, other)
    assert switch.detected and switch.votes == 2 and switch.score == 1.0
    ex = drift_methods.explain(ref, other, [SWITCHED] * 100, 10, [CANNED] * 150)
    assert ex["farthest"] == [{"text": SWITCHED, "distance": pytest.approx(1 - float(canned @ switched), abs=1e-3),
                               "nearest_reference": CANNED}]
    assert ex["novel_share"] == 1.0 and ex["clusters"][0]["size"] == 100
    # 5 new answers in 100: the centroid moves (the reference never varies), the classifier cannot
    # tell (AUC ~0.53): one vote of two is not drift.
    few = drift_methods.compare(ref, np.vstack([np.tile(canned, (95, 1)), np.tile(switched, (5, 1))]))
    assert few.methods["centroid_cosine"].detected and not few.methods["domain_classifier"].detected
    assert few.decided and not few.detected


def test_a_handful_of_texts(degenerate_env):
    cfg, store, *_ = degenerate_env
    r, s = summary_of(store, "handful")
    assert not r["drift_detected"]
    inp, out = s["sides"]["input"], s["sides"]["output"]
    # Two inputs at 80/20: most pairs are the same vector, so MMD cannot run; the other two decide.
    assert inp["decided"] and not inp["detected"] and inp["methods_run"] == 2
    assert "at least half of its pairs are the same vector" in inp["methods"]["mmd"]["error"]
    assert methods_written(store, "handful", "input") == {"domain_classifier", "centroid_cosine", "combined"}
    # Three answers in equal shares: every method runs.
    assert out["decided"] and not out["detected"] and out["methods_run"] == 3
    assert methods_written(store, "handful", "output") == {"domain_classifier", "mmd", "centroid_cosine", "combined"}
    # Three answers are drawn; two inputs lie on a line, drawn or left out with the reason, as Evidently manages.
    widgets, omitted = embedding_widgets(r["snapshot"]), s.get("report_omitted", {})
    assert "output" in widgets and ("input" in widgets) != ("embeddings:input" in omitted)


def test_blank_inputs_leave_that_side_undecided(degenerate_env):
    cfg, store, clock, app, job, run, keys = degenerate_env
    r, s = summary_of(store, "blank")
    inp, out = s["sides"]["input"], s["sides"]["output"]
    assert s["samples"] == {"reference": 150, "current": 100}
    assert not inp["decided"] and not inp["detected"] and inp["methods"] == {}
    assert inp["samples"] == {"reference": 150, "current": 10}
    assert inp["reason"].startswith("too few input texts: reference 150, current 10 (drift.min_samples 20)")
    assert methods_written(store, "blank", "input") == set()
    assert out["decided"] and out["methods_run"] == 3
    assert methods_written(store, "blank", "output") == {"domain_classifier", "mmd", "centroid_cosine", "combined"}
    assert "no input text" in s["report_omitted"]["embeddings:input"]
    assert embedding_widgets(r["snapshot"]) == {"output"}
    # The page says what could not be decided and why.
    html = app.test_client().get(f"/reports/{r['report_id']}", headers=auth(keys["read"])).get_data(as_text=True)
    assert "input texts: not decided" in html and "too few input texts" in html
    c = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").get_data(as_text=True)).group(1)
    c.post("/login", data={"csrf_token": token, "api_key": keys["read"]})
    page = c.get("/drift?service=svc&feature=blank&window=1h&from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00Z")
    assert page.status_code == 200 and "not decided" in page.get_data(as_text=True)
    # Requests without any input text still count for their answers: the output side is compared,
    # the input side has no texts in the current hour and says so.
    q = reports(store)["noinput"]
    s = json.loads(q["summary"])
    assert q["status"] == "ok" and s["samples"] == {"reference": 150, "current": 100}
    assert s["sides"]["output"]["decided"] and s["sides"]["output"]["methods_run"] == 3
    assert not s["sides"]["input"]["decided"] and "too few input texts" in s["sides"]["input"]["reason"]
    assert point(store, "embedding_drift_current_samples", service="svc", feature="noinput") == 100


def test_samples_of_exactly_min_samples(degenerate_env):
    cfg, store, *_ = degenerate_env
    r, s = summary_of(store, "tiny")
    assert s["samples"] == {"reference": MIN_SAMPLES, "current": MIN_SAMPLES}
    for side in ("input", "output"):
        assert s["sides"][side]["decided"] and s["sides"][side]["methods_run"] == 3
        assert not s["sides"][side]["detected"]
        assert methods_written(store, "tiny", side) == {"domain_classifier", "mmd", "centroid_cosine", "combined"}
    assert embedding_widgets(r["snapshot"]) == {"input", "output"} and "report_omitted" not in s


def test_texts_longer_than_the_model_reads(degenerate_env):
    cfg, store, *_ = degenerate_env
    r, s = summary_of(store, "long")
    assert not r["drift_detected"]
    inp, out = s["sides"]["input"], s["sides"]["output"]
    # The model reads 256 tokens: every input is the same preamble to it, one vector.
    assert inp["decided"] and inp["methods_run"] == 2 and "1 distinct of 25" in inp["methods"]["mmd"]["error"]
    assert out["decided"] and out["methods_run"] == 3 and not out["detected"]
    assert methods_written(store, "long", "output") == {"domain_classifier", "mmd", "centroid_cosine", "combined"}
    assert embedding_widgets(r["snapshot"]) == {"output"}


def test_another_language_is_drift(degenerate_env):
    cfg, store, *_ = degenerate_env
    r, s = summary_of(store, "language")
    assert r["drift_detected"]
    for side in ("input", "output"):
        assert s["sides"][side]["detected"] and s["sides"][side]["methods_run"] == 3
        assert all(m["detected"] for m in s["sides"][side]["methods"].values())
        assert point(store, "embedding_drift_detected", service="svc", feature="language", text=side,
                     method="combined") == 1.0
    ex = json.loads(r["explanation"])["input"]
    assert ex["novel_share"] > 0.5 and ex["farthest"][0]["text"] in set(german(100, 25))
    assert embedding_widgets(r["snapshot"]) == {"input", "output"}


def test_a_failing_report_never_costs_the_numbers(degenerate_env, monkeypatch):
    """Fault injection: Evidently failing for a reason not met yet. The row keeps the decision."""
    cfg, store, clock, app, job, run, keys = degenerate_env

    def broken(*a, **kw):
        raise ValueError("a picture that cannot be drawn")
    monkeypatch.setattr(drift_methods, "report", broken)
    end = T0 + HOUR + dt.timedelta(minutes=1)  # the "tiny" requests again, as a report of its own
    points = list(job.compare_window("svc", "tiny", "1h", T0, end))
    r = store.query_dicts("SELECT * FROM drift_reports FINAL WHERE report_id = {id:String}",
                          {"id": report_id("svc", "tiny", "1h", end)})[0]
    s = json.loads(r["summary"])
    assert r["status"] == "ok" and s["samples"] == {"reference": MIN_SAMPLES, "current": MIN_SAMPLES}
    assert r["snapshot"] == "" and s["report_error"] == "ValueError: a picture that cannot be drawn"
    assert {p.labels["text"] for p in points if p.metric == "embedding_drift_detected"} == {"input", "output"}
    assert s["sides"]["input"]["decided"] and s["sides"]["output"]["decided"]
    c = app.test_client()
    page = c.get(f"/reports/{r['report_id']}", headers=auth(keys["read"]))
    assert page.status_code == 404
    assert "the Evidently report could not be drawn (ValueError: a picture that cannot be drawn)" in page.get_data(
        as_text=True)
    one = c.get(f"/v1/reports/{r['report_id']}", headers=auth(keys["read"])).get_json()
    assert one["status"] == "ok" and one["summary"]["report_error"]


def test_report_keeps_what_can_be_drawn(monkeypatch):
    """Real Evidently: constant embeddings cannot be pictured and an empty numeric column cannot be
    tested, so there is no snapshot, and every part says why; one failing part costs only itself."""
    rng = np.random.default_rng(0)
    vecs = {"input": np.ones((30, 8)), "output": np.ones((30, 8))}
    empty = pd.DataFrame({c: np.full(30, np.nan) for c in drift_methods.NUMERIC_COLUMNS})
    snapshot, omitted = drift_methods.report(vecs, vecs, empty, empty.copy(), 0.95)
    assert snapshot is None
    assert set(omitted) == {"embeddings:input", "embeddings:output", "report"} | {
        f"value_drift:{c}" for c in drift_methods.NUMERIC_COLUMNS}
    assert "empty column" in omitted["value_drift:latency_ms"]
    # One column that cannot be tested is left out; the rest is drawn.
    numeric = pd.DataFrame({c: rng.uniform(1, 2, 30) for c in drift_methods.NUMERIC_COLUMNS}).assign(cost_usd=np.nan)
    varied = {"input": rng.normal(size=(30, 8)), "output": rng.normal(size=(30, 8))}
    snapshot, omitted = drift_methods.report(varied, varied, numeric, numeric.copy(), 0.95)
    assert set(omitted) == {"value_drift:cost_usd"}
    assert set(drift_methods.numeric_drift(snapshot)) == {"latency_ms", "input_tokens", "output_tokens"}
    # A picture Evidently fails to draw (with the check for a constant sample off, gaussian_kde raises on
    # it) is found by trying each part: the rest is drawn.
    monkeypatch.setattr(drift_methods, "PICTURE_MIN_DISTINCT", 1)
    numeric = numeric.assign(cost_usd=rng.uniform(1, 2, 30))
    snapshot, omitted = drift_methods.report(varied, {"input": np.ones((30, 8)), "output": varied["output"]},
                                             numeric, numeric.copy(), 0.95)
    assert set(omitted) == {"embeddings:input"} and "LinAlgError" in omitted["embeddings:input"]
    assert embedding_widgets(snapshot.dumps()) == {"output"} and len(drift_methods.numeric_drift(snapshot)) == 4


def test_methods_say_why_they_cannot_run():
    """Preconditions on vectors (no model needed): nothing raises, every refusal has a reason."""
    rng = np.random.default_rng(1)
    varied = rng.normal(size=(40, 8))
    nan = varied.copy()
    nan[3, 2] = np.nan
    result = drift_methods.compare(varied, nan)
    assert result.ran == [] and not result.decided and not result.detected
    assert all("NaN" in r.error for r in result.methods.values())
    assert "only 0 of 3 methods could run" in result.undecided_reason
    # Identical constant samples: not drift (the two methods that can run agree).
    const = np.tile(varied[:1], (40, 1))
    same = drift_methods.compare(const, const.copy())
    assert same.ran == ["domain_classifier", "centroid_cosine"] and same.decided and not same.detected
    # With min_methods 3, the same comparison is not decided, and says so.
    strict = drift_methods.compare(const, const.copy(), min_methods=3)
    assert not strict.decided and strict.score is None and "mmd:" in strict.as_dict()["reason"]


def test_a_broken_model_still_fails_the_run(degenerate_env, tmp_path):
    cfg, store, clock, *_ = degenerate_env
    broken = cfg.model_copy(update={"embeddings": cfg.embeddings.model_copy(
        update={"model_path": str(tmp_path / "no-such-model")})})
    run = DriftJob(store, broken, clock, HOUR).run(since=T0)
    assert run.status == "error" and "drift comparison(s) failed" in run.error
    assert "embeddings.model_path" in run.error


@pytest.mark.fast
def test_the_faster_evidently_helpers_give_evidently_s_numbers():
    """jobs.drift_methods puts its own random-guess AUC and MMD bootstrap statistic in place of Evidently's (for
    speed); they must compute the same numbers, ties and unequal classes included."""
    from jobs import drift_methods
    drift_methods._faster_evidently()
    original = drift_methods.EVIDENTLY_ORIGINALS
    assert original["calc_roc_auc_random"].__module__.startswith("evidently")
    rng = np.random.default_rng(3)
    for n in (7, 60, 999):
        y = pd.Series(rng.integers(0, 2, n))
        y.iloc[0], y.iloc[1] = 0, 1
        for seed in range(25):
            assert drift_methods._random_auc(y, seed) == pytest.approx(original["calc_roc_auc_random"](y, seed),
                                                                        abs=1e-12)
    from sklearn.metrics.pairwise import pairwise_kernels
    K = pairwise_kernels(rng.normal(size=(120, 8)), metric="rbf", gamma=0.1)
    for seed in range(25):
        xi, yi = rng.choice(120, 70), rng.choice(120, 50)
        assert drift_methods._mmd_bootstrap(K, 70, 50, xi, yi) == pytest.approx(
            original["MMD2u_bstrp"](K, 70, 50, xi, yi), rel=1e-12, abs=1e-15)


@pytest.mark.fast
def test_the_centroid_cosine_on_arrays_is_evidently_s_method():
    from evidently.metrics.embeddings import DistanceDriftMethod

    from jobs import drift_methods
    rng = np.random.default_rng(4)
    for m, n, shift in ((300, 200, 0.0), (250, 400, 0.05), (120, 120, 0.3)):
        ref = rng.normal(size=(m, 16))
        cur = rng.normal(size=(n, 16)) + shift
        frame = drift_methods._frame
        ours = drift_methods._CentroidCosine(0.95)(frame(cur), frame(ref))
        theirs = DistanceDriftMethod(dist="cosine", bootstrap=True, quantile_probability=0.95)(frame(cur), frame(ref))
        assert ours[0] == pytest.approx(theirs[0], rel=1e-9) and ours[1:] == theirs[1:]
