"""``evaluate``: sampled answers sent to each configured automated evaluator (an LLM judge behind an
OpenAI-compatible chat-completions endpoint), its labels stored as feedback, and how far it agrees with the
reviewers (monitor/foundation/agreement.py).

Each run, per evaluator: the answered requests of its services and features whose id hashes under its
``sample_rate`` (the review queue's hash, so the judge's sample holds the reviewers' at a lower rate), over the
last day (a call that failed is asked again by the next run) and never one its prompt version already has a
final outcome for. Calls go out ``concurrency`` at a time; 429, 5xx, timeouts and refused connections are
retried ``retries`` times with exponential backoff (a 429's Retry-After honoured, up to MAX_BACKOFF). The run
stops asking for the hour at ``max_calls_per_hour`` and for the UTC day at ``max_cost_usd_per_day`` (the judge's
own token usage at the price table's price; calls in flight when a cap is reached still land, so a cap is
exceeded by at most ``concurrency - 1`` calls); what it left is counted as skipped and asked in a later hour.

An answer is a JSON object with ``label`` (one of ``labels``) and ``reason``, also inside a code fence or with
text around it; anything else is a parse failure, counted and final for that prompt version, never a label.
Every call is recorded as a request of service ``nlpmon-evaluators`` (feature: the evaluator) through the
ingest pipeline, so its cost and latency show on the overview; the label as feedback (source ``auto``,
reviewer the evaluator's name, feedback_id fixed per evaluator, prompt version and request: a replay stores
nothing twice). The key (``api_key_env``) is read from the environment at each run and never logged.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

import httpx

from monitor.foundation.agreement import agreements
from monitor.foundation.clock import iso_utc
from monitor.foundation.config import EvaluatorConfig
from monitor.foundation.job import Job
from monitor.foundation.metrics import Point, floor_to
from monitor.foundation.tables import evaluations, feedback, metric_points
from monitor.foundation.tables.evaluations import EVALUATOR_SERVICE, Candidate, Evaluation
from monitor.foundation.tables.requests import SAMPLE_HASH_SPACE

log = logging.getLogger(__name__)
LOOKBACK = dt.timedelta(days=1)       # every run reaches this far back: a failed call is asked again
AGREEMENT_WINDOW = dt.timedelta(days=30)
SKEW = dt.timedelta(hours=1)          # requests stamped a little ahead of this clock (a client's) still count
MAX_BACKOFF = 30.0                    # seconds, whatever a Retry-After asks
BACKOFF = 0.5                         # seconds before the first retry, doubling
MAX_TEXT = 6000                       # characters of each text put in the prompt
BATCH = 200                           # candidates read and asked per batch
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


class JudgeError(Exception):
    def __init__(self, message: str, retryable: bool, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.retryable, self.status, self.retry_after = retryable, status, retry_after


@dataclass
class Reply:
    content: str
    input_tokens: int
    output_tokens: int


def parse_label(content: str, labels: list[str]) -> tuple[str, str] | None:
    """(label, reason) from the judge's answer: a JSON object, also inside a code fence or with text around it;
    None when there is no object with a ``label`` among ``labels``."""
    texts = [content.strip()]
    texts += [m.strip() for m in _FENCE.findall(content)]
    start, end = content.find("{"), content.rfind("}")
    if 0 <= start < end:
        texts.append(content[start:end + 1])
    for text in texts:
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("label"), str):
            label = obj["label"].strip().lower()
            if label in labels:
                reason = obj.get("reason")
                return label, (reason if isinstance(reason, str) else "")[:1000]
    return None


class Judge:
    """One evaluator's endpoint: a chat-completions POST, its errors classified (retryable or not)."""

    def __init__(self, ev: EvaluatorConfig, client: httpx.Client):
        self.ev, self.client = ev, client
        self.json_mode = True   # response_format json_object until the endpoint refuses it

    def ask(self, c: Candidate) -> Reply:
        ev = self.ev
        prompt = ev.prompt.format(input=c.input_text[:MAX_TEXT], context=c.context_text[:MAX_TEXT] or "(none)",
                                  output=c.output_text[:MAX_TEXT])
        body = {"model": ev.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": ev.max_tokens}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(ev.api_key_env) if ev.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            resp = self.client.post(f"{ev.endpoint}/chat/completions", json=body, headers=headers,
                                    timeout=ev.timeout.total_seconds())
        except httpx.TimeoutException:
            raise JudgeError(f"timed out after {ev.timeout.total_seconds():g}s", True) from None
        except httpx.TransportError as exc:
            raise JudgeError(f"cannot reach the endpoint: {type(exc).__name__}", True) from None
        if resp.status_code in (400, 422) and self.json_mode and any(
                w in resp.text.lower() for w in ("response_format", "response format", "json_object")):
            self.json_mode = False  # an endpoint without JSON mode: ask again without it
            return self.ask(c)
        if resp.status_code == 429 or resp.status_code >= 500:
            raise JudgeError(f"HTTP {resp.status_code}", True, resp.status_code, _retry_after(resp))
        if resp.status_code >= 300:
            raise JudgeError(f"HTTP {resp.status_code}: {resp.text[:200]}", False, resp.status_code)
        try:
            data = resp.json()
            content = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            return Reply("", 0, 0)  # not a chat completion: a parse failure, like any unreadable answer
        usage = data.get("usage") or {}
        return Reply(str(content), int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return float(resp.headers.get("retry-after", ""))
    except ValueError:
        return None


class EvaluateJob(Job):
    name = "evaluate"
    description = "automated evaluators (LLM judges) on sampled answers, and their agreement with reviewers"

    def __init__(self, store, config, clock, interval, ingestor=None, sleep: Callable[[float], None] = time.sleep):
        super().__init__(store, config, clock, interval)
        # The ingest pipeline (handed in by the composition root): the judges' calls as requests, their labels
        # as feedback, and the price table their cost is counted with.
        self.ingestor = ingestor
        self.sleep = sleep

    def minimum_recompute(self) -> dt.timedelta:
        return LOOKBACK

    def catchup_limit(self) -> dt.timedelta:
        return max(LOOKBACK, self.config.jobs.catchup_max)

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        now = self.clock.now()
        for ev in self.config.evaluators:
            yield from self._evaluate(ev, start, end, now)
        yield from self._agreement(now)

    # -- asking ----------------------------------------------------------------------------------------------
    def _evaluate(self, ev: EvaluatorConfig, start, end, now) -> Iterable[Point]:
        version = ev.prompt_version()
        hour, day = floor_to(now, 3600), floor_to(now, 86400)
        used = evaluations.usage(self.store, ev.name, hour, day)
        state = _RunState(calls=used.calls, cost=used.cost_usd)
        under = int(round(ev.sample_rate * SAMPLE_HASH_SPACE))
        judge = Judge(ev, httpx.Client(follow_redirects=False))
        after: tuple[dt.datetime, str] | None = None
        try:
            while not state.capped:
                batch = evaluations.candidates(self.store, ev.name, version, start, end, SAMPLE_HASH_SPACE, under,
                                               ev.services, ev.features, BATCH, after)
                if not batch:
                    break
                after = (batch[-1].ts, batch[-1].request_id)
                self._store(ev, version, self._ask_all(judge, ev, version, batch, state))
                if len(batch) < BATCH:
                    break
        finally:
            judge.client.close()
        if state.capped:
            # What the cap left of the window's sample: asked by a later run, in the next hour (or day).
            state.skipped = evaluations.waiting(self.store, ev.name, version, start, end, SAMPLE_HASH_SPACE, under,
                                                ev.services, ev.features)
            log.info("evaluate: %s reached its %s cap; %d sampled answers wait", ev.name, state.capped, state.skipped)
        yield from self._run_points(ev, now, state)

    def _ask_all(self, judge: Judge, ev: EvaluatorConfig, version: str, batch: list[Candidate],
                 state: "_RunState") -> list[Evaluation]:
        out: list[Evaluation] = []

        def one(c: Candidate) -> Evaluation | None:
            with state.lock:
                if state.calls >= ev.max_calls_per_hour or state.cost >= ev.max_cost_usd_per_day:
                    state.capped = state.capped or ("calls per hour" if state.calls >= ev.max_calls_per_hour
                                                    else "cost per day")
                    return None
                state.calls += 1
            e = self._ask(judge, ev, version, c)
            with state.lock:
                state.cost += e.cost_usd
                state.outcomes[e.status] = state.outcomes.get(e.status, 0) + 1
            return e

        with ThreadPoolExecutor(max_workers=ev.concurrency, thread_name_prefix=f"judge-{ev.name}") as pool:
            for e in pool.map(one, batch):
                if e is not None:
                    out.append(e)
        return out

    def _ask(self, judge: Judge, ev: EvaluatorConfig, version: str, c: Candidate) -> Evaluation:
        attempts, error, started = 0, "", time.monotonic()
        while True:
            attempts += 1
            try:
                reply = judge.ask(c)
                break
            except JudgeError as exc:
                error = str(exc)
                if not exc.retryable or attempts > ev.retries:
                    return self._outcome(ev, version, c, "failed", attempts=attempts, error=error,
                                         latency_ms=(time.monotonic() - started) * 1000)
                wait = exc.retry_after if exc.retry_after is not None else BACKOFF * 2 ** (attempts - 1)
                self.sleep(min(MAX_BACKOFF, max(0.0, wait)))
        latency = (time.monotonic() - started) * 1000
        cost = 0.0
        if self.ingestor is not None:
            cost = self.ingestor.prices.cost(ev.model, self.clock.now().date(), reply.input_tokens,
                                             reply.output_tokens) or 0.0
        parsed = parse_label(reply.content, ev.labels)
        common = dict(attempts=attempts, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                      cost_usd=cost, latency_ms=latency)
        if parsed is None:
            return self._outcome(ev, version, c, "parse_failure", error="no JSON object with a known label",
                                 **common)
        return self._outcome(ev, version, c, "labelled", label=parsed[0], reason=parsed[1], **common)

    def _outcome(self, ev, version, c: Candidate, status: str, **kw) -> Evaluation:
        return Evaluation(ev.name, version, c.request_id, c.service, c.feature, c.ts, self.clock.now(), status, **kw)

    def _store(self, ev: EvaluatorConfig, version: str, outcomes: list[Evaluation]) -> None:
        """The labels as feedback and the calls as requests first (fixed ids: a replay adds nothing), then the
        outcomes that mark them asked: a run killed between the two asks again, never loses a label."""
        if self.ingestor is not None and outcomes:
            labels = [{"feedback_id": f"auto-{ev.name}-{version}-{e.request_id}", "request_id": e.request_id,
                       "ts": iso_utc(e.evaluated_at), "kind": ev.feedback_kind, "label": e.label, "source": "auto",
                       "reviewer": ev.name, "comment": e.reason, "value": ev.values.get(e.label)}
                      for e in outcomes if e.status == "labelled"]
            calls = [{"request_id": f"judge-{ev.name}-{version}-{e.request_id}", "ts": iso_utc(e.evaluated_at),
                      "service": EVALUATOR_SERVICE, "feature": ev.name, "model": ev.model, "provider": "judge",
                      "prompt_version": version,
                      "status": "ok" if e.status != "failed" else ("timeout" if "timed out" in e.error else "error"),
                      "error_type": "" if e.status != "failed" else e.error[:60],
                      "latency_ms": round(e.latency_ms, 1), "input_tokens": e.input_tokens,
                      "output_tokens": e.output_tokens} for e in outcomes]
            for kind, rows in (("feedback", labels), ("requests", calls)):
                if rows:
                    result = self.ingestor.ingest(kind, rows)
                    if result.rejected:
                        log.warning("evaluate: %s: %d of its %s rows rejected (kept with the rejected rows)",
                                    ev.name, result.rejected, kind)
        evaluations.write(self.store, outcomes)

    # -- points ----------------------------------------------------------------------------------------------
    def _run_points(self, ev: EvaluatorConfig, now: dt.datetime, state: "_RunState") -> Iterable[Point]:
        labels = {"evaluator": ev.name}
        t = floor_to(now, 60)
        done = sum(state.outcomes.values())
        failed_run = done > 0 and state.outcomes.get("failed", 0) == done
        previous = next((v.value for v in metric_points.newest_per_series(
            self.store, "evaluator_failed_runs", "1m", t - dt.timedelta(days=7), t - dt.timedelta(microseconds=1))
            if v.labels == labels), None)
        streak = ((previous or 0.0) + 1.0) if failed_run else (previous or 0.0) if done == 0 else 0.0
        yield Point(t, "1m", "evaluator_failed_runs", labels, streak)
        yield Point(t, "1m", "evaluator_skipped_by_cap", labels, float(state.skipped))
        day = floor_to(now, 86400)
        c = evaluations.counts(self.store, day, day + dt.timedelta(days=1)).get(ev.name)
        if c is not None:
            end = day + dt.timedelta(days=1)
            for metric, value in (("evaluator_calls", c.calls), ("evaluator_labels", c.labelled),
                                  ("evaluator_parse_failures", c.parse_failures),
                                  ("evaluator_call_failures", c.failed), ("evaluator_retries", c.retries),
                                  ("evaluator_cost_usd", c.cost_usd)):
                yield Point(end, "1d", metric, labels, float(value))

    def _agreement(self, now: dt.datetime) -> Iterable[Point]:
        rows = feedback.judged_counts(self.store, now - AGREEMENT_WINDOW, now + SKEW)
        if not rows:
            return
        need = {ev.name: ev.min_overlap for ev in self.config.evaluators}
        floor = {ev.name: ev.min_kappa for ev in self.config.evaluators}
        t = floor_to(now, 60)
        for a in agreements(rows, need):
            labels = {"evaluator": a.judge}
            if a.feature:
                labels.update(service=a.service, feature=a.feature)
            yield Point(t, "30d", "evaluator_overlap", labels, float(a.overlap))
            if a.kappa is not None:
                yield Point(t, "30d", "evaluator_kappa", labels, a.kappa)
                if a.judge in floor and a.feature:  # the ticket is per feature: the overall kappa would repeat it
                    yield Point(t, "30d", "evaluator_kappa_below_min", labels, float(a.kappa < floor[a.judge]))
            if a.estimated_rate is not None and a.feature:
                yield Point(t, "30d", "hallucination_rate_estimated", labels, a.estimated_rate)
                yield Point(t, "30d", "hallucination_rate_estimated_low", labels, a.estimated_low)
                yield Point(t, "30d", "hallucination_rate_estimated_high", labels, a.estimated_high)


@dataclass
class _RunState:
    calls: int = 0
    cost: float = 0.0
    skipped: int = 0
    capped: str = ""

    def __post_init__(self):
        self.lock = threading.Lock()
        self.outcomes: dict[str, int] = {}
