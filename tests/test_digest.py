"""The digest: two weeks of traffic through the real ingest path, a weekly digest built from it and compared
with the overview's numbers for the same week, delivered through the outbox to a loopback webhook, a
Slack-compatible loopback and a loopback SMTP server once per period across reruns and a restart, a missed
schedule sent on start, the page checked in Chromium at a mail client's width and printed to PDF."""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from dashboards import digest as dg
from dashboards import kpis
from dashboards.digest_task import DigestTask, latest_fire
from monitor.app import create_app
from monitor.foundation.clock import iso_utc
from monitor.foundation.tables import alert_history, releases
from monitor.scheduler import build_jobs
from tests.helpers import LiveServer
from tests.loopback import Recorder
from tests.test_receivers import HttpRecorder, SmtpSink

UTC = dt.timezone.utc
WEEK = dt.timedelta(days=7)
# A Monday: the digested week is [START, START + 7d). Recent (8 to 14 days back), so its texts are stored:
# the engine's TTL blanks texts older than retention.text_days as they are inserted, which would leave the
# "no raw text in a digest" checks nothing to find.
_AGO = (dt.datetime.now(UTC) - dt.timedelta(days=8)).replace(hour=0, minute=0, second=0, microsecond=0)
START = _AGO - dt.timedelta(days=_AGO.weekday())
FIRES = START + WEEK                                 # "0 0 * * mon": the Monday after, at midnight
SECRET = "SECRET-PROMPT-7781"                        # in every prompt and answer: never in a digest


def _traffic(app) -> None:
    """Two weeks of two features; in the second week support-bot/answer's error rate goes from 2% to 9% and its
    thumbs-up rate drops, copilot/draft-email gets faster."""
    rng = random.Random(5)
    reqs, fbs = [], []
    t, i = START - WEEK, 0
    while t < START + WEEK:
        second = t >= START
        for feature, service, model in (("answer", "support-bot", "gpt-4o"), ("draft-email", "copilot", "gpt-4o-mini")):
            for _ in range(12):
                i += 1
                ts = t + dt.timedelta(seconds=rng.uniform(0, 3599), microseconds=rng.randrange(1000))
                failed = rng.random() < (0.09 if second and feature == "answer" else 0.02)
                fast = second and feature == "draft-email"
                rid = f"r{i}"
                reqs.append({"request_id": rid, "ts": iso_utc(ts), "service": service, "feature": feature,
                             "model": model, "status": "error" if failed else "ok",
                             "error_type": "upstream_5xx" if failed else "",
                             "latency_ms": round(rng.lognormvariate(7.0 if not fast else 6.6, 0.3), 1),
                             "input_tokens": 400, "output_tokens": 0 if failed else 80,
                             "input_text": f"{SECRET} question {i}", "output_text": "" if failed else f"{SECRET} answer"})
                if not failed and rng.random() < 0.4:
                    up = rng.random() < (0.6 if second and feature == "answer" else 0.85)
                    fbs.append({"feedback_id": f"f{i}", "request_id": rid, "kind": "thumbs", "value": int(up),
                                "ts": iso_utc(ts + dt.timedelta(seconds=20)), "comment": f"{SECRET} comment"})
        t += dt.timedelta(hours=1)
    ingest = app.extensions["nlpmon"].ingestor.ingest
    for k in range(0, len(reqs), 5000):
        assert ingest("requests", reqs[k:k + 5000]).rejected == 0
    assert ingest("feedback", fbs).rejected == 0


@pytest.fixture(scope="module")
def week(chdb_dir):
    """The store, its app and the config, shared by the module's tests (each queues under its own ids)."""
    from monitor.foundation.clock import ManualClock
    from tests.helpers import app_of_its_own
    clock = ManualClock(START + WEEK + dt.timedelta(minutes=5))
    with app_of_its_own(chdb_dir, clock, "digest", drift={"enabled": False}, grounding={"enabled": False},
                        slos=[{"name": "answer-availability", "service": "support-bot", "feature": "answer",
                               "objective": 97, "sli": "availability"}]) as app:
        _traffic(app)
        svc = app.extensions["nlpmon"]
        # An incident in the week, resolved after 42 minutes, and a release with its verdict.
        t = START + dt.timedelta(days=3, hours=10)
        labels = {"alertname": "HighErrorRate", "service": "support-bot", "feature": "answer", "severity": "page"}
        alert_history.append(svc.store, [[t, "fp1", "HighErrorRate", labels, "pending", "firing", 0.11, "", False],
                                         [t + dt.timedelta(minutes=42), "fp1", "HighErrorRate", labels, "firing",
                                          "inactive", 0.02, "", False]])
        releases.write(svc.store, [releases.Release("rel-x", "copilot", "draft-email", "prompt_version", "v3", "v2",
                                                    START + dt.timedelta(days=2), mode="before_after", verdict="pass",
                                                    reason="no metric worse")], clock.now())
        assert build_jobs(svc.store, svc.config, clock)["slo"].run(since=START + WEEK - dt.timedelta(hours=1)).status == "ok"
        yield app


def _config(app, **digest):
    cfg = app.extensions["nlpmon"].config
    return cfg, cfg.model_copy(update={"digests": [cfg.digests[0].model_copy(update=digest)] if cfg.digests else []})


def _with_receivers(app, hook_url: str, slack_url: str, smtp_port: int, name: str = "weekly"):
    from monitor.foundation.config import load_config
    base = app.extensions["nlpmon"].config
    return load_config(env={}, overrides={
        "clickhouse": {"url": base.clickhouse.url, "database": base.clickhouse.database},
        "server": {"external_url": "https://nlpmon.example.com"},
        "slos": [s.model_dump() for s in base.slos], "drift": {"enabled": False}, "grounding": {"enabled": False},
        "alerts": {"receivers": [{"name": "hook", "webhook": {"url": hook_url}},
                                 {"name": "chat", "slack": {"url": slack_url}},
                                 {"name": "mail", "email": {"to": ["managers@example.com"], "from": "nlpmon@example.com",
                                                            "smarthost": f"127.0.0.1:{smtp_port}"}}],
                   "route": {"receiver": "hook"}},
        "digests": [{"name": name, "schedule": "0 0 * * mon", "period": "7d", "receivers": ["hook", "chat", "mail"]}]})


def test_the_digest_has_the_overviews_numbers_for_the_same_week_and_no_raw_text(week):
    svc = week.extensions["nlpmon"]
    config = _with_receivers(week, "http://127.0.0.1:9/hook", "http://127.0.0.1:9/slack", 25)
    cfg = config.digests[0]
    fired = latest_fire(cfg, FIRES + dt.timedelta(hours=3))
    assert fired == FIRES and dg.period_of(cfg, fired) == (START, START + WEEK)
    d = dg.build(svc.store, config, cfg, START, START + WEEK, fired)
    body = dg.as_json(d)
    assert body["kind"] == "digest" and (body["from"], body["to"]) == (iso_utc(START), iso_utc(START + WEEK))
    assert body["url"].startswith("https://nlpmon.example.com/digest/weekly?at=")
    rows = {(r.service, r.feature): r for r in kpis.overview(svc.store, config, kpis.Period("custom", START, START + WEEK), {})}
    assert {(f["service"], f["feature"]) for f in body["features"]} == {k for k in rows if k != ("", "")}
    for f in body["features"]:
        r = rows[(f["service"], f["feature"])]
        for key in ("requests", "error_rate", "latency_p95_ms", "thumbs_up_rate", "cost_per_successful_outcome_usd"):
            # A percentile merges t-digest states, in an order the engine chooses: equal to 1 in 1,000.
            assert f[key]["value"] == pytest.approx(r.current.get(key), rel=1e-3), (f["feature"], key)
            assert f[key]["previous"] == pytest.approx(r.previous.get(key), rel=1e-3), (f["feature"], key)
        for key in ("task_success_rate", "hallucination_rate"):  # no such feedback: no change, and the reason
            assert f[key]["change"] is None and f[key]["reason"], f[key]
    answer = next(f for f in body["features"] if f["feature"] == "answer")
    assert answer["error_rate"]["change"] == pytest.approx(rows[("support-bot", "answer")].current["error_rate"]
                                                           - rows[("support-bot", "answer")].previous["error_rate"])
    assert answer["slo_error_budget_remaining"]["value"] is not None
    # What it says first: answer's errors and thumbs got worse, draft-email got faster; each tested and explained.
    worse = {(m["feature"], m["metric"]) for m in body["movers"]["worse"]}
    assert ("answer", "error_rate") in worse and ("answer", "thumbs_up_rate") in worse, body["movers"]
    better = {(m["feature"], m["metric"]) for m in body["movers"]["better"]}
    assert ("draft-email", "latency_p95_ms") in better, body["movers"]
    assert all(m["significant"] for side in body["movers"].values() for m in side)
    assert [(i["rule"], i["time_to_resolve_seconds"]) for i in body["incidents"]] == [("HighErrorRate", 42 * 60)]
    assert [(r["value"], r["verdict"]) for r in body["releases"]] == [("v3", "pass")]
    assert body["cost"]["drivers"] and body["cost"]["cost_usd"] > 0
    assert [s["slo"] for s in body["slos_at_risk"]] == ["answer-availability"]  # 9% errors against a 3% budget
    # Aggregates and links only (the texts are stored: their absence here is the digest's doing).
    assert svc.store.scalar("SELECT countIf(position(input_text, {s:String}) > 0) FROM requests",
                            {"s": SECRET}) > 1000
    for rendered in (json.dumps(body), dg.as_text(d), dg.as_html(d), json.dumps(dg.as_slack(d))):
        assert SECRET not in rendered


def test_delivered_once_per_period_to_webhook_slack_and_email_across_reruns_and_a_restart(week):
    svc = week.extensions["nlpmon"]
    with Recorder() as hook, HttpRecorder() as slack, SmtpSink() as smtp:
        config = _with_receivers(week, hook.url, slack.url + "/services/T/B/x", smtp.port, name="weekly-once")
        now = FIRES + dt.timedelta(minutes=10, microseconds=250)  # after the outbox rows' creation (the app's clock)
        task = DigestTask(svc.store, config, svc.clock, dt.timedelta(minutes=1))
        assert task.run(now).rows == 3
        task.outbox.deliver_due(now)
        for minute in range(1, 4):  # the scheduler's next runs, and a restart (a new task, a new outbox)
            again = DigestTask(svc.store, config, svc.clock, dt.timedelta(minutes=1)) if minute == 3 else task
            assert again.run(now + dt.timedelta(minutes=minute)).rows == 0
            again.outbox.deliver_due(now + dt.timedelta(minutes=minute))
        bodies = hook.take()
        assert len(bodies) == 1 and bodies[0]["kind"] == "digest" and bodies[0]["name"] == "weekly-once"
        assert bodies[0]["from"] == iso_utc(START) and len(bodies[0]["features"]) == 2
        assert len(slack.bodies) == 1 and slack.bodies[0]["blocks"][0]["type"] == "header"
        assert "Got worse" in json.dumps(slack.bodies[0]["blocks"])
        assert len(smtp.messages) == 1
        message = smtp.messages[0]["message"]
        assert message["Subject"].startswith("nlpmon digest weekly-once")
        parts = {p.get_content_type(): p.get_content() for p in message.walk() if not p.is_multipart()}
        assert "Got worse" in parts["text/plain"] and 'id="movers"' in parts["text/html"]
        assert SECRET not in parts["text/plain"] + parts["text/html"]
        # The next period is a new digest.
        assert task.run(now + WEEK).rows == 3
        task.outbox.deliver_due(now + WEEK)
        assert [b["from"] for b in hook.take()] == [iso_utc(START + WEEK)] and len(smtp.messages) == 2


def test_a_missed_schedule_is_sent_on_start_within_the_next_period_and_not_after(week):
    svc = week.extensions["nlpmon"]
    with Recorder() as hook:
        config = _with_receivers(week, hook.url, hook.url, 25, name="weekly-missed")
        config = config.model_copy(update={"digests": [config.digests[0].model_copy(update={"receivers": ["hook"]})]})
        # Down from Sunday to Wednesday: started again Wednesday (the scheduler's task), Monday's digest goes out.
        task = build_jobs(svc.store, config, svc.clock)["digests"]
        wednesday = FIRES + dt.timedelta(days=2, hours=3, microseconds=77)
        assert task.run(wednesday).rows == 1
        task.outbox.deliver_due(wednesday)
        assert [b["from"] for b in hook.take() if b.get("name") == "weekly-missed"] == [iso_utc(START)]
        # Before the first schedule in reach: nothing.
        early = DigestTask(svc.store, config.model_copy(update={"digests": [config.digests[0].model_copy(
            update={"name": "weekly-late", "schedule": "0 8 1 1 *"})]}), svc.clock, dt.timedelta(minutes=1))
        assert early.run(wednesday).rows == 0


def test_the_page_fits_a_mail_clients_width_and_prints_to_pdf_without_cut_tables(week, browser):
    svc = week.extensions["nlpmon"]
    config = _with_receivers(week, "http://127.0.0.1:9/hook", "http://127.0.0.1:9/s", 25)
    svc.config = config
    app = create_app(config, svc.store, svc.clock)
    key = app.extensions["nlpmon"].keys.create("digest-reader", ["read"])[1]
    with LiveServer(app) as site:
        ctx = browser.new_context(viewport={"width": 600, "height": 900})
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(site.url + "/login")
        page.fill("#api_key", key)
        page.click("button[type=submit]")
        page.goto(f"{site.url}/digest/weekly?at={iso_utc(FIRES + dt.timedelta(hours=1))}")
        page.wait_for_selector("#digest")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "wider than 600 px"
        assert page.locator("#movers li[data-side]").count() == 0  # the lists are ul[data-side]
        assert page.locator("#movers ul[data-side=worse] li[data-metric=error_rate]").count() == 1
        assert SECRET not in page.content()
        page.emulate_media(media="print")
        for table in page.locator("table").all():
            assert table.evaluate("t => getComputedStyle(t).breakInside") == "avoid"
        assert page.locator(".page-only").evaluate("e => getComputedStyle(e).display") == "none"
        from tests.conftest import ARTIFACTS
        ARTIFACTS.mkdir(exist_ok=True)
        for fmt in ("A4", "Letter"):
            pdf = page.pdf(format=fmt, print_background=True)
            assert pdf[:5] == b"%PDF-" and len(pdf) > 5000
            (ARTIFACTS / f"digest-{fmt}.pdf").write_bytes(pdf)
        page.emulate_media(media="screen")
        page.screenshot(path=str(ARTIFACTS / "digest-600.png"), full_page=True)
        assert errors == [], errors
        ctx.close()
    assert app.test_client().get("/digest/weekly").status_code in (302, 401)  # a key is needed


def test_cli_previews_and_names_a_bad_digest(week, tmp_path):
    from click.testing import CliRunner

    from monitor.cli import cli
    base = week.extensions["nlpmon"].config
    (tmp_path / "monitor.yaml").write_text(json.dumps({
        "alerts": {"receivers": [{"name": "hook", "webhook": {"url": "http://127.0.0.1:9/hook"}}],
                   "route": {"receiver": "hook"}},
        "digests": [{"name": "weekly", "schedule": "0 0 * * mon", "receivers": ["hook"]}]}))
    env = {"MONITOR_CONFIG": str(tmp_path / "monitor.yaml"), "MONITOR_CLICKHOUSE_URL": base.clickhouse.url,
           "MONITOR_CLICKHOUSE_DATABASE": base.clickhouse.database}
    at = iso_utc(FIRES + dt.timedelta(hours=1))
    out = CliRunner().invoke(cli, ["digest", "preview", "weekly", "--at", at], env=env)
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"# nlpmon digest weekly: {START:%Y-%m-%d} to {START + WEEK:%Y-%m-%d}")
    assert "## Got worse" in out.output
    out = CliRunner().invoke(cli, ["digest", "preview", "weekly", "--at", at, "--format", "json"], env=env)
    assert out.exit_code == 0 and json.loads(out.output)["kind"] == "digest"
    bad = CliRunner().invoke(cli, ["digest", "preview", "monthly"], env=env)
    assert bad.exit_code == 2 and "no digest named 'monthly'" in bad.output
    # send: queued and delivered at once, once; --force sends it again.
    with Recorder() as hook:
        (tmp_path / "monitor.yaml").write_text(json.dumps({
            "alerts": {"receivers": [{"name": "hook", "webhook": {"url": hook.url}}], "route": {"receiver": "hook"}},
            "digests": [{"name": "cli-weekly", "schedule": "0 0 * * mon", "receivers": ["hook"]}]}))
        for args, sent in ((["digest", "send", "cli-weekly", "--at", at], 1), (["digest", "send", "cli-weekly", "--at", at], 0),
                           (["digest", "send", "cli-weekly", "--at", at, "--force"], 1)):
            out = CliRunner().invoke(cli, args, env=env)
            assert out.exit_code == 0, out.output
            bodies = hook.take()
            assert len(bodies) == sent and all(b["name"] == "cli-weekly" and b["from"] == iso_utc(START) for b in bodies)


def test_digest_config_names_the_field_and_the_problem(make_config):
    from monitor.foundation.config import ConfigError
    receivers = {"receivers": [{"name": "hook", "webhook": {"url": "http://x/h"}},
                               {"name": "pd", "pagerduty": {"routing_key": "k"}}], "route": {"receiver": "hook"}}
    for digest, where in (({"name": "w", "receivers": ["nope"]}, "no receiver named 'nope'"),
                          ({"name": "w", "receivers": ["pd"]}, "a digest goes to webhook, slack, email"),
                          ({"name": "w", "receivers": ["hook"], "schedule": "every monday"}, "schedule"),
                          ({"name": "w", "receivers": ["hook"], "period": "2w"}, "period")):
        with pytest.raises(ConfigError, match=where):
            make_config(alerts=receivers, digests=[digest])
