"""The ``evaluate`` job's throughput against a judge answering in 500 ms, at ``concurrency`` 1 and 8.

A fresh embedded store gets ``--answers`` answered requests (sample_rate 1: every one is asked); the job runs
once per concurrency against the loopback judge of tests/judge_server.py (OpenAI-compatible, 500 ms a call,
token usage reported), each time under a new prompt (a new prompt version: the same answers asked again).
Printed beside the baseline in the same run: the judge's own bound, concurrency / 0.5 s answers a second, and
the job's overhead per answer (storing labels as feedback, calls as requests, outcomes) at concurrency 8.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jobs.evaluate import EvaluateJob  # noqa: E402
from monitor.app import create_app  # noqa: E402
from monitor.foundation import migrate  # noqa: E402
from monitor.foundation.clock import ManualClock, iso_utc  # noqa: E402
from monitor.foundation.config import load_config  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402
from tests.judge_server import JudgeServer  # noqa: E402

UTC = dt.timezone.utc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=80, help="answered requests to judge per run")
    ap.add_argument("--delay", type=float, default=0.5, help="seconds the judge takes per call")
    args = ap.parse_args()
    now = dt.datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory() as tmp, JudgeServer(delay=args.delay) as judge:
        base = {"clickhouse": {"url": f"chdb://{tmp}", "database": "bench_evaluate"},
                "drift": {"enabled": False}, "grounding": {"enabled": False}}
        config = load_config(env={}, overrides=base)
        store = Store.from_config(config)
        migrate.upgrade(store, config)
        clock = ManualClock(now - dt.timedelta(minutes=30))
        app = create_app(config, store, clock)
        svc = app.extensions["nlpmon"]
        rows = [{"request_id": f"b-{i}", "ts": iso_utc(now - dt.timedelta(minutes=29, seconds=-i)),
                 "service": "support-bot", "feature": "answer", "model": "gpt-4o", "status": "ok",
                 "latency_ms": 800.0, "input_tokens": 300, "output_tokens": 60, "input_text": f"question {i}",
                 "context_text": "Refunds are accepted within 30 days of purchase with a receipt.",
                 "output_text": f"You can get a refund within 30 days ({i})."} for i in range(args.answers)]
        clock.set(now)
        assert svc.ingestor.ingest("requests", rows).rejected == 0
        print(f"machine: {os.cpu_count()} CPUs; {args.answers} answers per run; the judge takes {args.delay:g} s a call")
        print(f"{'concurrency':>11} {'answers':>8} {'seconds':>8} {'answers/s':>10} {'judge bound/s':>14} {'of bound':>9}")
        for k, concurrency in enumerate((1, 8)):
            evaluator = {"name": "judge", "endpoint": judge.url, "model": "gpt-4o-mini", "sample_rate": 1.0,
                         "concurrency": concurrency, "timeout": "10s", "max_calls_per_hour": 100_000,
                         "max_cost_usd_per_day": 1000.0}
            from monitor.foundation.config import HALLUCINATION_JUDGE_PROMPT
            evaluator["prompt"] = HALLUCINATION_JUDGE_PROMPT + f"\n(run {k})"
            cfg = load_config(env={}, overrides={**base, "evaluators": [evaluator]})
            clock.set(now + dt.timedelta(minutes=5 * (k + 1)))
            job = EvaluateJob(store, cfg, clock, dt.timedelta(minutes=5), ingestor=svc.ingestor)
            calls = len(judge.calls)
            t = time.perf_counter()
            result = job.run()
            took = time.perf_counter() - t
            asked = len(judge.calls) - calls
            assert result.status == "ok", result.error
            assert asked == args.answers, asked
            bound = concurrency / args.delay
            print(f"{concurrency:>11} {asked:>8} {took:>8.2f} {asked / took:>10.2f} {bound:>14.2f} "
                  f"{asked / took / bound:>8.0%}")
        labelled = store.scalar("SELECT count() FROM feedback FINAL WHERE source = 'auto'")
        print(f"labels stored: {labelled:,} (both runs; each prompt version labels every answer once)")
        store.close()


if __name__ == "__main__":
    main()
