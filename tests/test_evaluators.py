"""Automated evaluators: an OpenAI-compatible judge served on loopback (tests/judge_server.py) asked about
sampled answers by the real ``evaluate`` job, labels stored once through the real ingest path, retries,
parse failures and caps counted, a judge that is down alerted on and caught up after; agreement with reviewers
(kappa, confusion matrix) against a hand computation, and the corrected rate against a known truth."""
from __future__ import annotations

import datetime as dt
import logging
import random

import pytest

from alerts.engine import AlertEngine
from jobs.evaluate import EvaluateJob, parse_label
from monitor.app import create_app
from monitor.foundation.agreement import agreements, cohen_kappa, rogan_gladen
from monitor.foundation.clock import iso_utc
from monitor.foundation.tables import alert_history, metric_points
from monitor.foundation.tables.feedback import JudgedCount
from monitor.scheduler import build_jobs
from tests.helpers import auth, free_port
from tests.judge_server import JudgeServer

KEY = "sk-test-judge-7f3a9c1e5b"
# Within retention.text_days of the real date: the engine's TTL blanks older texts as they are inserted, and a
# judge is only asked about answers with a text.
T0 = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)).replace(hour=8, minute=0, second=0, microsecond=0)
HOUR = dt.timedelta(hours=1)


def _evaluator(url: str, **over) -> dict:
    return {"name": "judge", "endpoint": url, "model": "gpt-4o-mini", "api_key_env": "NLPMON_TEST_JUDGE_KEY",
            "sample_rate": 1.0, "timeout": "300ms", "concurrency": 4, **over}


def _answers(app, texts: list[str], start=T0, service="support-bot", feature="answer") -> list[str]:
    rows = [{"request_id": f"q-{i}", "ts": iso_utc(start + dt.timedelta(minutes=i, microseconds=137 * i + 11)),
             "service": service, "feature": feature, "model": "gpt-4o", "status": "ok", "latency_ms": 900.0,
             "input_tokens": 300, "output_tokens": 40, "input_text": f"question {i}",
             "context_text": "The refund window is 30 days.", "output_text": text} for i, text in enumerate(texts)]
    clock = app.extensions["nlpmon"].clock
    clock.set(start + HOUR + dt.timedelta(microseconds=421))  # received as they happen, never from the future
    assert app.extensions["nlpmon"].ingestor.ingest("requests", rows).rejected == 0
    return [r["request_id"] for r in rows]


def _job(app, sleeps: list | None = None) -> EvaluateJob:
    svc = app.extensions["nlpmon"]
    return EvaluateJob(svc.store, svc.config, svc.clock, dt.timedelta(minutes=5), ingestor=svc.ingestor,
                       sleep=(sleeps.append if sleeps is not None else (lambda s: None)))


def _labels(store) -> dict[str, str]:
    return dict(store.query("SELECT request_id, label FROM feedback FINAL WHERE source = 'auto' "
                            "AND reviewer = 'judge'"))


def test_evaluator_config_names_the_field_and_the_problem(make_config):
    from monitor.foundation.config import ConfigError
    good = _evaluator("http://127.0.0.1:9/v1")
    for bad, where in (({"endpoint": "ftp://x"}, "endpoint"), ({"prompt": "judge {answer}"}, "prompt"),
                       ({"labels": ["yes", "no"]}, "labels"), ({"api_key_env": "sk-live-123"}, "api_key_env"),
                       ({"feedback_kind": "task_success", "labels": ["done", "not_done"], "values": {"done": 1}},
                        "values.not_done")):
        with pytest.raises(ConfigError, match=where):
            make_config(evaluators=[{**good, **bad}])
    with pytest.raises(ConfigError, match="used twice"):
        make_config(evaluators=[good, good])
    task = make_config(evaluators=[{**good, "feedback_kind": "task_success", "labels": ["done", "not_done"],
                                    "values": {"done": 1, "not_done": 0}}]).evaluators[0]
    assert task.values == {"done": 1.0, "not_done": 0.0}


def test_parse_label_reads_objects_fenced_or_in_prose_and_nothing_else():
    labels = ["hallucinated", "grounded", "unsure"]
    assert parse_label('{"label": "grounded", "reason": "ok"}', labels) == ("grounded", "ok")
    assert parse_label('```json\n{"label": "Hallucinated", "reason": "x"}\n```', labels) == ("hallucinated", "x")
    assert parse_label('My verdict: {"label": "unsure"} as asked.', labels) == ("unsure", "")
    for bad in ("grounded", '{"label": "maybe"}', '{"verdict": "grounded"}', "[1, 2]", "", "{not json}"):
        assert parse_label(bad, labels) is None, bad


def test_a_judge_labels_sampled_answers_once_with_retries_and_parse_failures_counted(
        make_config, make_store, clock, monkeypatch, caplog):
    monkeypatch.setenv("NLPMON_TEST_JUDGE_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with JudgeServer() as judge:
        config = make_config(evaluators=[_evaluator(judge.url)], drift={"enabled": False},
                             grounding={"enabled": False})
        store = make_store(config)
        app = create_app(config, store, clock)
        texts = ["Refunds take 30 days.", "Refunds are instant. WRONG", "[429] Refunds take 30 days.",
                 "[500] It is WRONG", "[slow] Refunds take 30 days.", "[fence] WRONG answer",
                 "[text] Refunds take 30 days.", "[junk] whatever"]
        ids = _answers(app, texts)
        clock.set(T0 + HOUR + dt.timedelta(microseconds=421))
        sleeps: list[float] = []
        result = _job(app, sleeps).run()
        assert result.status == "ok", result.error
        labels = _labels(store)
        assert labels == {ids[0]: "grounded", ids[1]: "hallucinated", ids[2]: "grounded", ids[3]: "hallucinated",
                          ids[4]: "grounded", ids[5]: "hallucinated", ids[6]: "grounded"}  # not the junk answer
        outcomes = dict(store.query("SELECT request_id, status FROM evaluations FINAL"))
        assert outcomes[ids[7]] == "parse_failure" and sum(s == "labelled" for s in outcomes.values()) == 7
        # Retries: the 429 once (its Retry-After 0), the two 500s (0.5 s, then 1 s), the slow call once.
        attempts = dict(store.query("SELECT request_id, attempts FROM evaluations FINAL"))
        assert (attempts[ids[2]], attempts[ids[3]], attempts[ids[4]]) == (2, 3, 2)
        assert sorted(sleeps) == [0.0, 0.5, 0.5, 1.0]
        assert len(judge.calls) == 8 + 4
        assert {c["authorization"] for c in judge.calls} == {f"Bearer {KEY}"}
        assert all(c["body"]["response_format"] == {"type": "json_object"} for c in judge.calls)
        # The calls are requests of nlpmon-evaluators, priced from the judge's usage (100 in, 20 out).
        calls = store.query("SELECT count(), sum(cost_usd), sum(input_tokens) FROM requests FINAL "
                            "WHERE service = 'nlpmon-evaluators' AND feature = 'judge'")[0]
        assert calls[0] == 8 and calls[2] == 800 and calls[1] == pytest.approx(8 * (100 * 0.15 + 20 * 0.6) / 1e6)

        # Run again, and replay the window: nothing asked twice, nothing stored twice.
        clock.advance(dt.timedelta(minutes=5, microseconds=3))
        assert _job(app).run(since=T0 - HOUR).status == "ok"
        assert len(judge.calls) == 12 and _labels(store) == labels
        assert store.scalar("SELECT count() FROM feedback FINAL WHERE source = 'auto'") == 7

        # A changed prompt is a new version: the sample is judged again, under its own feedback ids.
        changed = make_config(evaluators=[_evaluator(judge.url, prompt=config.evaluators[0].prompt + "\nBe strict.")],
                              clickhouse={"database": config.clickhouse.database})
        svc = app.extensions["nlpmon"]
        job = EvaluateJob(store, changed, clock, dt.timedelta(minutes=5), ingestor=svc.ingestor, sleep=lambda s: None)
        assert job.run().status == "ok" and len(judge.calls) == 12 + 8

        read = svc.keys.create("reader", ["read"])[1]
        client = app.test_client()
        one = client.get("/v1/evaluators/judge", headers=auth(read)).get_json()
        assert one["kind"] == "llm_judge" and one["last_30_days"]["parse_failures"] == 2
        assert one["last_30_days"]["retries"] == 4  # the second version's calls met no trouble: seen answers
        assert client.get("/v1/evaluators/nope", headers=auth(read)).status_code == 404
        assert client.get("/v1/evaluators").status_code == 401
        from tests.test_dashboards import sign_in
        assert sign_in(client, read).status_code == 302
        pages = client.get("/evaluators").get_data(as_text=True) + client.get("/evaluators/judge").get_data(as_text=True)
        assert 'data-evaluator="judge"' in pages and "2 parse failures" in pages
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'nlpmon_evaluator_parse_failures{evaluator="judge",window="1d"}' in metrics
        # The key never shows: not in the logs, the API, the pages or /metrics.
        everything = caplog.text + str(one) + pages + metrics + client.get("/v1/evaluators").get_data(as_text=True)
        assert KEY not in everything


def test_caps_stop_asking_for_the_hour_and_the_day_and_count_what_they_left(make_config, make_store, clock,
                                                                            monkeypatch):
    monkeypatch.setenv("NLPMON_TEST_JUDGE_KEY", KEY)
    with JudgeServer() as judge:
        config = make_config(evaluators=[_evaluator(judge.url, max_calls_per_hour=5, concurrency=2)])
        store = make_store(config)
        app = create_app(config, store, clock)
        _answers(app, [f"answer {i}" for i in range(12)])
        clock.set(T0 + HOUR + dt.timedelta(microseconds=5))
        assert _job(app).run().status == "ok"
        assert len(judge.calls) == 5 and len(_labels(store)) == 5

        def skipped():
            return [v.value for v in metric_points.newest_per_series(store, "evaluator_skipped_by_cap", "1m",
                                                                      T0, clock.now() + HOUR)]
        assert skipped() == [7.0]
        clock.advance(dt.timedelta(minutes=20, microseconds=17))  # the same hour: nothing more
        assert _job(app).run().status == "ok" and len(judge.calls) == 5
        clock.advance(HOUR)  # the next hour: five more
        assert _job(app).run().status == "ok" and len(judge.calls) == 10 and skipped() == [2.0]

    with JudgeServer() as judge:
        # One call costs (100 x 0.15 + 20 x 0.60) / 1e6 = $0.000027: a day's cap of $0.00005 allows two.
        config = make_config(evaluators=[_evaluator(judge.url, max_cost_usd_per_day=0.00005, concurrency=1)])
        store = make_store(config)
        app = create_app(config, store, clock)
        _answers(app, [f"answer {i}" for i in range(6)])
        clock.set(T0 + HOUR + dt.timedelta(microseconds=9))
        job = build_jobs(store, config, clock)["evaluate"]  # as the scheduler runs it, with its own ingest pipeline
        assert job.run().status == "ok" and len(judge.calls) == 2
        clock.advance(2 * HOUR)  # the same UTC day: the cap still holds
        assert job.run().status == "ok" and len(judge.calls) == 2
        assert store.scalar("SELECT sum(cost_usd) FROM requests FINAL WHERE service = 'nlpmon-evaluators'") == \
            pytest.approx(2 * 0.000027)


def test_a_judge_that_is_down_alerts_after_failed_runs_and_loses_nothing(make_config, make_store, clock,
                                                                         monkeypatch):
    monkeypatch.setenv("NLPMON_TEST_JUDGE_KEY", KEY)
    port = free_port()  # nothing listens: connections are refused
    config = make_config(evaluators=[_evaluator(f"http://127.0.0.1:{port}/v1", retries=1)],
                         drift={"enabled": False}, grounding={"enabled": False})
    store = make_store(config)
    app = create_app(config, store, clock)
    ids = _answers(app, ["Refunds take 30 days.", "It is WRONG"])
    clock.set(T0 + HOUR + dt.timedelta(microseconds=77))
    engine = AlertEngine(store, config, clock)
    for _ in range(3):
        assert _job(app).run().status == "ok"
        assert engine.run().status == "ok"
        clock.advance(dt.timedelta(minutes=5, microseconds=13))
    failing = [h for h in alert_history.between(store, T0, clock.now()) if h.rule == "EvaluatorFailing"]
    assert failing and failing[0].to_state in ("pending", "firing") and failing[0].labels["evaluator"] == "judge"
    assert store.scalar("SELECT count() FROM evaluations FINAL WHERE status = 'failed'") == 2
    assert _labels(store) == {}
    # The judge comes back on that port: the same answers are asked again and labelled.
    judge = JudgeServer()
    judge.server.server_close()
    from http.server import ThreadingHTTPServer
    judge.server = ThreadingHTTPServer(("127.0.0.1", port), judge.server.RequestHandlerClass)
    with judge:
        assert _job(app).run().status == "ok"
    assert _labels(store) == {ids[0]: "grounded", ids[1]: "hallucinated"}
    streak = [v.value for v in metric_points.newest_per_series(store, "evaluator_failed_runs", "1m", T0,
                                                                clock.now() + HOUR)]
    assert streak == [0.0]


def _feedback_pairs(app, cells: dict[tuple[str, str], int], start=T0) -> None:
    """Requests with a judge label and (unless human is "") a reviewer label, per (judge label, human) count."""
    reqs, fbs, i = [], [], 0
    for (judged, human), n in cells.items():
        for _ in range(n):
            rid = f"p-{i}"
            ts = start + dt.timedelta(minutes=i, microseconds=3 * i + 1)
            reqs.append({"request_id": rid, "ts": iso_utc(ts), "service": "support-bot", "feature": "answer",
                         "model": "gpt-4o", "status": "ok", "latency_ms": 500.0, "output_text": "an answer"})
            fbs.append({"feedback_id": f"a-{rid}", "request_id": rid, "ts": iso_utc(ts + HOUR), "kind": "hallucination",
                        "label": judged, "source": "auto", "reviewer": "judge"})
            if human:
                fbs.append({"feedback_id": f"r-{rid}", "request_id": rid, "ts": iso_utc(ts + 2 * HOUR),
                            "kind": "hallucination", "label": human, "source": "reviewer", "reviewer": "ana"})
            i += 1
    ingest = app.extensions["nlpmon"].ingestor.ingest
    assert ingest("requests", reqs).rejected == 0 and ingest("feedback", fbs).rejected == 0


def test_kappa_and_the_confusion_matrix_equal_a_hand_computation_and_a_drifted_judge_tickets(
        make_config, make_store, clock, browser):
    config = make_config(evaluators=[_evaluator("http://127.0.0.1:9/v1", min_kappa=0.6)],
                         drift={"enabled": False}, grounding={"enabled": False})
    store = make_store(config)
    app = create_app(config, store, clock)
    # tp 12, fn 3 (+2 unsure on hallucinated), fp 5, tn 20 (+1 unsure on grounded); 7 judged, not reviewed.
    cells = {("hallucinated", "hallucinated"): 12, ("grounded", "hallucinated"): 3,
             ("unsure", "hallucinated"): 2, ("hallucinated", "grounded"): 5, ("grounded", "grounded"): 20,
             ("unsure", "grounded"): 1, ("hallucinated", ""): 3, ("grounded", ""): 4}
    clock.set(T0 + 5 * HOUR + dt.timedelta(microseconds=19))
    _feedback_pairs(app, cells)
    # By hand: tp 12, fn 5, fp 5, tn 21, n 43; po = 33/43; pe = (17*17 + 26*26)/43^2.
    po, pe = 33 / 43, (17 * 17 + 26 * 26) / 43 ** 2
    kappa = (po - pe) / (1 - pe)
    assert cohen_kappa(12, 5, 5, 21) == pytest.approx(kappa)
    svc = app.extensions["nlpmon"]
    job = EvaluateJob(store, config, clock, dt.timedelta(minutes=5), ingestor=None, sleep=lambda s: None)
    assert job.run().status == "ok"  # its endpoint answers nothing: every answer here is already labelled
    read = svc.keys.create("reader", ["read"])[1]
    one = app.test_client().get("/v1/evaluators/judge", headers=auth(read)).get_json()
    feature = next(f for f in one["features"] if f["feature"] == "answer")
    assert feature["matrix"] == {"hallucinated": {"hallucinated": 12, "grounded": 5},
                                 "grounded": {"hallucinated": 3, "grounded": 20},
                                 "unsure": {"hallucinated": 2, "grounded": 1}}
    assert feature["overlap"] == 43 and feature["judged"] == 50 and feature["judged_positive"] == 20
    assert feature["kappa"] == pytest.approx(kappa) and feature["kappa_low"] < kappa < feature["kappa_high"]
    assert feature["sensitivity"] == pytest.approx(12 / 17) and feature["specificity"] == pytest.approx(21 / 26)
    # The corrected rate: (20/50 + 21/26 - 1) / (12/17 + 21/26 - 1), with an interval around it.
    expected = (20 / 50 + 21 / 26 - 1) / (12 / 17 + 21 / 26 - 1)
    assert feature["estimated_rate"] == pytest.approx(expected)
    assert feature["estimated_low"] < expected < feature["estimated_high"]
    # kappa 0.51 < min_kappa 0.6 over 43 >= 30 answers: the EvaluatorDisagrees ticket.
    assert one["below_min_kappa"] == ["support-bot/answer"]
    assert AlertEngine(store, config, clock).run().status == "ok"
    fired = [h for h in alert_history.between(store, T0, clock.now() + HOUR) if h.rule == "EvaluatorDisagrees"]
    assert [h.labels.get("feature") for h in fired if h.to_state == "firing"] == ["answer"], fired

    # The overview: no reviewed sample in the period (these labels never went through the review queue), so
    # the cell shows the estimate, says it is one, and why.
    from tests.test_dashboards import sign_in
    client = app.test_client()
    assert sign_in(client, read).status_code == 302
    page_html = client.get("/?period=24h").get_data(as_text=True)
    assert f'data-estimate="{expected:.4f}"' in page_html and "estimated (" in page_html
    assert "judge judge" in page_html and "0 reviewed answers in the period" in page_html

    from tests.helpers import LiveServer
    with LiveServer(app) as site:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(site.url + "/login")
        page.fill("#api_key", read)
        page.click("button[type=submit]")
        page.click("nav >> text=Evaluators")
        page.wait_for_url(site.url + "/evaluators")
        row = page.locator("tr[data-evaluator=judge]")
        assert float(row.locator("td[data-kappa]").get_attribute("data-kappa")) == pytest.approx(kappa, abs=1e-4)
        assert "below 0.6" in row.inner_text()
        row.locator("a").first.click()
        section = page.locator("section[data-scope='support-bot/answer']")
        section.wait_for()
        assert section.locator("tr[data-label=hallucinated] td[data-human=grounded]").inner_text() == "5"
        assert section.locator("tr[data-label=unsure] td[data-human=hallucinated]").inner_text() == "2"
        assert "%" in section.locator("dd[data-stat=estimated]").inner_text()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert errors == [], errors
        ctx.close()


def test_the_corrected_rate_covers_the_truth_and_is_nearer_it_than_the_judges_own():
    """A population with a known hallucination rate, a judge with known error rates (sensitivity 0.8,
    specificity 0.9) labelling all of it, reviewers labelling a sample: over 40 seeds, the corrected rate's
    interval holds the truth about 95% of the time, and it is nearer the truth than the judge's own rate
    (0.205 where the truth is 0.15)."""
    covered, errors, judged_errors = 0, [], []
    for seed in range(40):
        rng = random.Random(seed)
        truth_rate, n, reviewed = 0.15, 3000, 600
        counts: dict[tuple[str, str], int] = {}
        for i in range(n):
            truth = rng.random() < truth_rate
            said = (rng.random() < 0.8) if truth else (rng.random() < 0.1)
            label = "hallucinated" if said else "grounded"
            human = ("hallucinated" if truth else "grounded") if i < reviewed else ""
            counts[(label, human)] = counts.get((label, human), 0) + 1
        rows = [JudgedCount("judge", "s", "f", label, human, k) for (label, human), k in counts.items()]
        a = next(x for x in agreements(rows, 30) if x.feature == "f")
        covered += a.estimated_low <= truth_rate <= a.estimated_high
        errors.append(abs(a.estimated_rate - truth_rate))
        judged_errors.append(abs(a.judged_rate - truth_rate))
    assert covered >= 36, covered          # 95% nominal: at least 90% of 40
    assert sum(errors) / 40 < 0.02 and sum(judged_errors) / 40 > 0.045, (sum(errors) / 40, sum(judged_errors) / 40)


def test_rogan_gladen_says_nothing_for_a_judge_no_better_than_chance():
    rows = [JudgedCount("coin", "s", "f", label, human, 20)
            for label in ("hallucinated", "grounded") for human in ("hallucinated", "grounded")]
    a = next(x for x in agreements(rows, 30) if x.feature == "f")
    assert a.kappa == pytest.approx(0.0) and a.estimated_rate is None and "chance" in a.reason
    thin = next(x for x in agreements(rows[:1], 30) if x.feature == "f")
    assert thin.kappa is None and "not enough overlap" in thin.reason
    est, lo, hi = rogan_gladen(30, 100, 40, 10, 5, 45)
    assert lo <= est <= hi and est == pytest.approx((0.3 + 0.9 - 1) / (0.8 + 0.9 - 1))


def test_an_endpoint_without_json_mode_is_asked_again_without_it(make_config, make_store, clock):
    with JudgeServer(json_mode=False) as judge:
        config = make_config(evaluators=[_evaluator(judge.url, api_key_env=None, concurrency=1)])
        store = make_store(config)
        app = create_app(config, store, clock)
        ids = _answers(app, ["Refunds take 30 days.", "WRONG again"])
        clock.set(T0 + HOUR + dt.timedelta(microseconds=31))
        assert _job(app).run().status == "ok"
        assert _labels(store) == {ids[0]: "grounded", ids[1]: "hallucinated"}
        # Refused once, then asked without response_format for the rest of the run; no key configured, none sent.
        assert ["response_format" in c["body"] for c in judge.calls] == [True, False, False]
        assert {c["authorization"] for c in judge.calls} == {None}
