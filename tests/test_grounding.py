"""The grounding proxy on the real model: sentence scores, the job's rate, and review ordering."""
from __future__ import annotations

import datetime as dt

from jobs.embeddings import Embedder
from jobs.grounding import GroundingProxyJob, proxy_scores, sentences
from jobs.grounding import AnswerProxy
from monitor.review.sampling import HallucinationSampleJob
from monitor.app import create_app
from tests.helpers import auth
from tests.test_jobs import T0, iso

CONTEXT = ("[kb:refunds-2] Refunds reach the original payment method 5-10 business days after the return is "
           "scanned. [kb:shipping-1] Domestic orders ship within 1 business day and arrive in 2-4 business days.")
GROUNDED = "Your refund reaches your original payment method 5-10 business days after we scan the return."
INVENTED = "Refunds are processed instantly. We also give every customer a free smartwatch as an apology."


def test_sentences():
    assert sentences("One. Two?  Three!\nFour") == ["One.", "Two?", "Three!", "Four"]
    assert sentences("") == []


def test_proxy_scores_separate_grounded_from_invented(make_config, make_store, clock):
    cfg = make_config()
    embed = Embedder(make_store(cfg), cfg, clock).embed
    (g_bad, g_n), (i_bad, i_n), (none_bad, none_n) = proxy_scores(
        [(GROUNDED, CONTEXT), (INVENTED, CONTEXT), (INVENTED, "")], embed, cfg.grounding.threshold)
    assert (g_bad, g_n) == (0, 1)
    assert i_n == 2 and i_bad >= 1
    assert (none_bad, none_n) == (0, 0)  # no context: nothing to compare with, not "ungrounded"


def _requests(n, feature, answer, prefix):
    return [{"request_id": f"{prefix}-{i}", "ts": iso(T0 + dt.timedelta(seconds=3600 * i / n)), "service": "svc",
             "feature": feature, "model": "m", "status": "ok", "latency_ms": 100.0,
             "input_text": f"When do I get my refund for order {i}?", "context_text": CONTEXT,
             "output_text": answer} for i in range(n)]


def test_job_rate_and_review_order(make_config, make_store, clock):
    cfg = make_config(review={"sample_rate": 0.2, "min_per_day": 0, "prioritize": "ungrounded_proxy"})
    store = make_store(cfg)
    clock.set(T0 + dt.timedelta(hours=1, minutes=5))
    app = create_app(cfg, store, clock)
    svc = app.extensions["nlpmon"]
    batch = _requests(60, "good", GROUNDED, "g") + _requests(60, "bad", INVENTED, "b")
    assert svc.ingestor.ingest("requests", batch).rejected == 0
    job = GroundingProxyJob(store, cfg, clock, dt.timedelta(hours=1))
    assert job.run().status == "ok"

    def rate(feature):
        return store.scalar("SELECT argMax(value, computed_at) FROM metric_points WHERE metric = 'ungrounded_proxy_rate' "
                            "AND window = '1h' AND labels['feature'] = {f:String}", {"f": feature})
    assert rate("good") == 0.0
    assert rate("bad") >= 0.5
    assert store.scalar("SELECT argMax(value, computed_at) FROM metric_points WHERE metric = "
                        "'ungrounded_proxy_answers' AND labels = map('service', 'svc')") == 120

    # The sampler scores queued items, and the review API hands out the most suspicious first.
    sample = HallucinationSampleJob(store, cfg, clock, dt.timedelta(minutes=10), proxy=AnswerProxy(store, cfg, clock))
    assert sample.run().status == "ok"
    key = svc.keys.create("ana", ["review"])[1]
    item = app.test_client().get("/v1/review/next", headers=auth(key)).get_json()["item"]
    assert item["feature"] == "bad" and item["ungrounded_proxy"] >= 0.5
    scored = store.query("SELECT feature, min(ungrounded_proxy), max(ungrounded_proxy) FROM review_queue FINAL "
                         "GROUP BY feature ORDER BY feature")
    assert scored[0][0] == "bad" and scored[0][1] >= 0.5 and scored[1] == ("good", 0.0, 0.0)
