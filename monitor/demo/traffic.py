"""Synthetic LLM traffic for ``nlpmon demo``: the generator.

The point of the demo is that every dashboard, alert and drift job has
something to find, so the traffic is shaped like a real product rather than
uniform noise:

* five features on three services, each with its own model, latency
  distribution (lognormal with a long tail), token counts and prompt caching;
* load that follows a diurnal curve (mid-day UTC about 2x the mean, night
  about 0.3x) and dips at weekends (:mod:`monitor.demo.timeline`);
* short but plausible texts from per-feature template pools
  (:mod:`monitor.demo.texts`), a few prompt injections and abusive messages,
  and about one request in 200 carrying PII so server-side redaction is visible;
* user feedback that lags its request and follows answer quality;
* five incidents placed inside the window (see :func:`monitor.demo.timeline.incidents`), each with a
  cause the incident explorer's "What changed" can name (a region, a model, a prompt version, a topic, a
  language).

Everything is drawn from ``random.Random(seed)``, so the same arguments give
the same events. Events are plain JSON-ready dicts in the v1 event contract
(``monitor/foundation/events.py``), without the fields the server fills in itself
(``cost_usd``, ``pii_detected``).
"""
from __future__ import annotations

import datetime as dt
import heapq
import math
import random
import uuid
from dataclasses import dataclass
from typing import Iterator

from monitor.demo import texts
from monitor.demo.texts import Slots
from monitor.demo.timeline import (
    CANARY_SHARE,
    HOUR_MS,
    LOCALE_FAILURE,
    RELEASED,
    MINUTE_MS,
    REGRESSED_PROMPT,
    SECOND_MS,
    incident_map,
    iso,
    load_factor,
    poisson,
    releases,
    to_ms,
    window,
)

__all__ = ["FEATURES", "Feature", "expected_requests", "generate", "generate_live"]


# -- features ------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    service: str
    name: str
    model: str
    provider: str
    prompt_version: str
    weight: float                 # share of all traffic
    streaming: bool               # only streaming features report TTFT
    rag: bool
    latency_median_ms: float      # model time excluding prompt processing
    latency_sigma: float          # lognormal shape: larger means a longer tail
    tail_share: float             # requests that hit a slow replica or a retry (x3)
    ttft_share: float             # median time to first token, as a share of model time
    ms_per_output_token: float
    prefill_ms_per_input_token: float
    input_tokens: tuple[int, int]
    prompt_cache_rate: float      # requests whose system prompt prefix the provider had cached
    cacheable_prefix: int         # tokens of that prefix
    satisfaction: float           # chance an ok response leaves the user happy


# Rows of texts.json; Feature(**row) fails loudly if a field is missing or misspelt there.
FEATURES: tuple[Feature, ...] = tuple(Feature(**{**row, "input_tokens": tuple(row["input_tokens"])})
                                      for row in texts.DATA["features"])
_FEATURE_CUM = tuple(sum(f.weight for f in FEATURES[: i + 1]) for i in range(len(FEATURES)))

# name, weight, region, plan, languages with cumulative weights
_TENANTS = tuple((t["name"], t["weight"], t["region"], t["plan"], tuple((lang, cum) for lang, cum in t["languages"]))
                 for t in texts.DATA["tenants"])
_TENANT_CUM = tuple(sum(t[1] for t in _TENANTS[: i + 1]) for i in range(len(_TENANTS)))
_LANGUAGE_CUM = tuple(tuple(c for _, c in t[4]) for t in _TENANTS)
_USERS_PER_TENANT = 3000
_CLIENTS = tuple(c for c, _ in texts.DATA["clients"])
_CLIENT_CUM = tuple(cum for _, cum in texts.DATA["clients"])

# Outcome rates. Rare classes are what the error and safety panels show.
_BASE_ERROR_RATE = 0.005
# The error burst is the provider's endpoint in one region failing: its requests fail at this rate, the
# other regions' not at all (so the burst shows where it is, as such outages do).
BURST_REGION, _BURST_FAILURE = "us-east-1", 0.9
# The regressed prompt's answers. Its drafts are longer: LONGER times the output tokens and the time to write
# them, a little wider spread (p95 about 1.6x). Once it takes all of draft-email's traffic, their tokens hit the
# provider's tokens-per-minute limit and generation is throttled: THROTTLED times the median, a wider spread again
# (p95 more than doubles). So its canary barely moves the feature's p95 (the release verdict sees it, the p95
# alert cannot), and the full rollout pages.
LONGER, LONGER_SPREAD = 1.5, 0.05
THROTTLED, THROTTLED_SPREAD = 2.2, 0.15
# Translate routes whole documents (about 6x the tokens, never a prompt-cache hit) to a larger model. Users
# seldom paste them, until the cost spike, when many do: the spike is traffic moving to the pricier model,
# each model's cost per request unchanged.
DOCUMENT_MODEL, _DOCUMENT_PROVIDER = "claude-3-opus", "anthropic"
_DOCUMENT_SHARE, _DOCUMENT_SHARE_IN_SPIKE, _DOCUMENT_TOO_LONG = 0.01, 0.4, 0.08
# The support bot's intent router labels each question with a topic, or `other` where no intent matches
# (the questions the topic shift brings, prompt injections and abuse).
_OTHER_TOPIC = "other"
_ERROR_TYPES = tuple((e["error_type"], e["status"], tuple(e["http_statuses"]), e["cum"])  # cum: cumulative share
                     for e in texts.DATA["error_types"])
_CANCEL_RATE = {True: 0.004, False: 0.001}  # streaming users abandon more often
_INJECTION_RATE = 0.003
_ABUSE_RATE = 0.0015
_PII_RATE = 0.005
_TIMEOUT_MS = 30_000.0

# Feedback rates on ok responses; failures get an occasional angry thumbs-down.
_THUMBS_RATE = 0.15
_TASK_RATE = 0.10
_RATING_RATE = 0.03
_ERROR_THUMBS_RATE = 0.10
_MAX_FEEDBACK_DELAY_MS = 6 * HOUR_MS


# -- generation ----------------------------------------------------------------
def expected_requests(days: float, rps: float) -> int:
    """Approximate number of request events generate() yields (for a progress bar total)."""
    return max(0, round(days * 86_400 * rps))


def generate(days: float, rps: float, end: dt.datetime, seed: int = 7) -> Iterator[tuple[str, dict]]:
    """Yield (kind, event) tuples in time order, kind in {"requests", "feedback"}.

    Covers [end - days, end). `end` is a timezone-aware UTC datetime.
    """
    if days <= 0 or rps < 0:
        raise ValueError("days must be positive and rps not negative")
    start_ms, end_ms = window(days, end)
    return _Generator(start_ms, end_ms, rps, seed).events()


def generate_live(start: dt.datetime, end: dt.datetime, rps: float, seed: int = 7) -> Iterator[tuple[str, dict]]:
    """Normal traffic in [start, end), without incidents: the demo's live traffic after its history.

    Its random streams are seeded by ``start`` too, so each stretch gets its own request ids, and
    sending the same stretch again sends the same events (the ingest drops them as duplicates).
    Feedback comes with its request's stretch even when it is stamped later.
    """
    start_ms, end_ms = to_ms(start), to_ms(end)
    if end_ms <= start_ms:
        return iter(())
    return _Generator(start_ms, end_ms, rps, f"{seed}-live-{start_ms}", incidents=False).events()


@dataclass
class _Text:
    input: str
    output: str
    context: str = ""
    retrieval_hit: bool | None = None
    grounded: bool | None = None
    topic: str = ""


class _Generator:
    def __init__(self, start_ms: int, end_ms: int, rps: float, seed: int | str, incidents: bool = True):
        self.start_ms, self.end_ms, self.rps = start_ms, end_ms, rps
        # Arrivals get their own stream so content changes never move timestamps.
        self.arrivals = random.Random(f"nlpmon-demo-arrivals-{seed}")
        self.rng = random.Random(f"nlpmon-demo-content-{seed}")
        self.live = not incidents
        inc = incident_map(start_ms, end_ms, incidents)
        self.burst, self.spike, self.prompt, self.shift = inc["burst"], inc["spike"], inc["prompt"], inc["shift"]
        self.locale = inc["locale"]
        # The locale incident and translate's routing draw from their own streams: the rest of the demo's
        # content does not move when they change.
        self.locale_rng = random.Random(f"nlpmon-demo-locale-{seed}")
        self.route_rng = random.Random(f"nlpmon-demo-route-{seed}")
        self.canary_rng = random.Random(f"nlpmon-demo-canary-{seed}")
        self.releases = {} if self.live else {r.feature: r for r in releases(start_ms, end_ms)}

    def events(self) -> Iterator[tuple[str, dict]]:
        pending: list[tuple[int, int, dict]] = []  # feedback waits here until its time comes
        seq = 0
        minute = self.start_ms
        while minute < self.end_ms:
            span = min(MINUTE_MS, self.end_ms - minute)
            count = poisson(self.arrivals, self.rps * load_factor(minute + span // 2) * span / SECOND_MS)
            for ts in sorted(minute + self.arrivals.randrange(span) for _ in range(count)):
                while pending and pending[0][0] <= ts:
                    yield "feedback", heapq.heappop(pending)[2]
                request, feedback = self._request(ts)
                yield "requests", request
                for fb_ts, fb in feedback:
                    seq += 1
                    heapq.heappush(pending, (fb_ts, seq, fb))
            minute += span
        while pending:
            yield "feedback", heapq.heappop(pending)[2]

    # -- one request -------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _request(self, ts: int) -> tuple[dict, list[tuple[int, dict]]]:
        rng = self.rng
        feat = FEATURES[_pick(rng, _FEATURE_CUM)]
        t_index = _pick(rng, _TENANT_CUM)
        tenant, _, region, plan, languages = _TENANTS[t_index]
        language = languages[_pick(rng, _LANGUAGE_CUM[t_index])][0]
        user = 1000 + t_index * _USERS_PER_TENANT + int(_USERS_PER_TENANT * rng.random() ** 2)  # a few heavy users
        in_burst = feat.name == "answer" and region == BURST_REGION and self.burst.covers(ts)
        document = feat.name == "translate" and self.route_rng.random() < (
            _DOCUMENT_SHARE_IN_SPIKE if self.spike.covers(ts) else _DOCUMENT_SHARE)
        # The regressed prompt takes a canary's share first (its own stream: the rest does not move), then all
        # of draft-email's traffic until the rollback.
        regressed = feat.name == "draft-email" and self.prompt.covers(ts) and (
            ts >= self.prompt.full_ms or self.canary_rng.random() < CANARY_SHARE)
        throttled = regressed and ts >= self.prompt.full_ms
        release = self.releases.get(feat.name)
        if self.live:  # after the history: its releases are live
            version = RELEASED.get(feat.name, feat.prompt_version)
        else:
            version = release.version if release and ts >= release.start_ms and release.serves(
                ts, self.route_rng.random() if ts < release.full_ms else 0.0) else feat.prompt_version
        shifted = feat.name == "answer" and self.shift.covers(ts)

        text = self._text(feat, language, shifted, document, regressed)
        injection = abuse = False
        if feat.name != "query-rewrite":
            roll = rng.random()
            injection = roll < _INJECTION_RATE
            abuse = _INJECTION_RATE <= roll < _INJECTION_RATE + _ABUSE_RATE
        if injection:
            text.input, text.output = rng.choice(texts.INJECTIONS), texts.REFUSAL
        elif abuse:
            text.input, text.output = rng.choice(texts.ABUSE), texts.DEESCALATE
        if rng.random() < _PII_RATE:
            text.input += texts.pii(rng)
        detected = injection and rng.random() < 0.9  # the detector misses a few

        status, error_type, http_status = self._outcome(feat, in_burst, document, detected, abuse)
        ok = status == "ok"
        latency, ttft, tokens_in, tokens_out, cached = self._timing(
            feat, status, error_type, slow=in_burst, regressed=regressed, throttled=throttled, document=document)

        request_id = self._uuid()
        event = {
            "request_id": request_id,
            "ts": iso(ts),
            "service": feat.service,
            "feature": feat.name,
            "model": DOCUMENT_MODEL if document else feat.model,
            "provider": _DOCUMENT_PROVIDER if document else feat.provider,
            "prompt_version": REGRESSED_PROMPT if regressed else version,
            "environment": "production",
            "region": region,
            "language": language,
            "tenant": tenant,
            "status": status,
            "error_type": error_type,
            "http_status": http_status,
            "latency_ms": latency,
            "ttft_ms": ttft,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cached_input_tokens": cached,
            "input_text": text.input,
            "output_text": text.output if ok else "",
            "context_text": text.context,
            "retrieval_hit": text.retrieval_hit,
            "grounded": text.grounded if ok else None,
            "cache_hit": cached > 0,
            "safety_flagged": abuse,
            "injection_detected": detected,
            "user_id": f"user-{user}",
            "session_id": _session(user, ts),
            "tags": {"client": _CLIENTS[_pick(rng, _CLIENT_CUM)], "plan": plan},
        }
        if feat.name == "answer":
            event["tags"]["topic"] = _OTHER_TOPIC if injection or abuse or text.topic == "new" else text.topic
        happy, reason = self._satisfaction(feat, ok, text, in_burst, regressed, latency)
        feedback = self._feedback(request_id, ts, ok, happy, reason)
        if (ok and language == "de" and feat.name == "summarize" and self.locale.covers(ts)
                and self.locale_rng.random() < LOCALE_FAILURE):
            # Generated, then rejected by the app's output check: the time was spent, no answer shown.
            event.update(status="error", error_type="output_validation", http_status=502, output_text="",
                         grounded=None)
            feedback = []
        return event, feedback

    def _outcome(self, feat: Feature, in_burst: bool, document: bool, injection: bool,
                 abuse: bool) -> tuple[str, str, int]:
        rng = self.rng
        if injection and rng.random() < 0.5:
            return "blocked", "prompt_injection", 400
        if abuse and rng.random() < 0.3:
            return "blocked", "content_filter", 400
        if in_burst and rng.random() < _BURST_FAILURE:
            return "error", "upstream_5xx", rng.choice((502, 503))
        if document and rng.random() < _DOCUMENT_TOO_LONG:  # some pasted documents do not fit at all
            return "error", "context_length", 400
        roll = rng.random()
        if roll < _BASE_ERROR_RATE:
            share = roll / _BASE_ERROR_RATE
            for error_type, status, codes, cum in _ERROR_TYPES:
                if share < cum:
                    return status, error_type, rng.choice(codes)
        if roll < _BASE_ERROR_RATE + _CANCEL_RATE[feat.streaming]:
            return "cancelled", "client_cancelled", 499
        return "ok", "", 200

    def _timing(self, feat: Feature, status: str, error_type: str, *, slow: bool, regressed: bool,
                throttled: bool, document: bool) -> tuple[float, float | None, int, int, int]:
        """(latency_ms, ttft_ms, input_tokens, output_tokens, cached_input_tokens)."""
        rng = self.rng
        if status in ("error", "timeout"):
            # Failed calls report no usage, so they carry no tokens and no first token.
            return round(_failure_latency(rng, error_type), 1), None, 0, 0, 0
        lo, hi = feat.input_tokens
        tokens_in = rng.randint(lo, hi) * (6 if document else 1)
        cached = 0
        if not document and feat.prompt_cache_rate and rng.random() < feat.prompt_cache_rate:
            cached = min(tokens_in, feat.cacheable_prefix) // 128 * 128  # providers cache in 128-token blocks
        prefill = tokens_in * feat.prefill_ms_per_input_token
        if status == "blocked":  # stopped by the moderation check before generation
            return round(prefill + rng.lognormvariate(math.log(120), 0.4), 1), None, tokens_in, 0, cached

        median, sigma = feat.latency_median_ms, feat.latency_sigma
        stretch = longer = 1.0  # the time to write the answer, and its tokens, as multiples of the feature's
        if throttled:
            median, sigma, stretch, longer = median * THROTTLED, sigma + THROTTLED_SPREAD, THROTTLED, LONGER
        elif regressed:
            median, sigma, stretch, longer = median * LONGER, sigma + LONGER_SPREAD, LONGER, LONGER
        if slow:  # the upstream that is throwing 5xx is also sluggish when it answers
            median *= 1.4
        core = rng.lognormvariate(math.log(median), sigma)
        if rng.random() < feat.tail_share:
            core *= 3
        share = min(0.9, feat.ttft_share * rng.lognormvariate(0.0, 0.35))
        # The regressed prompt's extra time is generation (longer, then throttled), not the first token.
        ttft = prefill + core / stretch * share
        latency = prefill + core
        written = core / stretch * longer * (1 - share)  # the writing time its tokens take unthrottled
        tokens_out = max(1, int(written / feat.ms_per_output_token * rng.uniform(0.85, 1.15)))
        if status == "cancelled":  # the user gave up part-way through the stream
            done = rng.uniform(0.1, 0.8)
            latency = ttft + (latency - ttft) * done
            tokens_out = int(tokens_out * done) if feat.streaming else 0
        latency = round(latency, 1)
        return latency, (min(round(ttft, 1), latency) if feat.streaming else None), tokens_in, tokens_out, cached

    # -- texts -------------------------------------------------------------------
    def _text(self, feat: Feature, language: str, shifted: bool, document: bool, regressed: bool) -> _Text:
        if feat.name == "answer":
            return self._answer(language, shifted)
        slots = Slots(self.rng)
        if feat.name == "summarize":
            return self._summary(slots)
        if feat.name == "query-rewrite":
            q, a = self.rng.choice(texts.SEARCHES)
            return _Text(q.format_map(slots), a.format_map(slots))
        if feat.name == "draft-email":
            draft = self.rng.choice(texts.EMAIL_DRAFTS) + (texts.EMAIL_V8_PADDING if regressed else "")
            return _Text(self.rng.choice(texts.EMAIL_ASKS).format_map(slots), draft.format_map(slots))
        return self._translation(language, document, slots)

    def _answer(self, language: str, shifted: bool) -> _Text:
        rng = self.rng
        slots = Slots(rng)
        if shifted and rng.random() < 0.4:
            q, a = rng.choice(texts.NEW_TOPIC)
            hit = rng.random() < 0.1
            passages = [texts.NEW_TOPIC_PASSAGE] if hit else []
            return _Text(q.format_map(slots), a.format_map(slots), self._context(None, passages), hit,
                         hit and rng.random() < 0.5, "new")
        if language != "en" and rng.random() < 0.7:
            q, a, topic = rng.choice(texts.LOCALIZED[language])
            hit = rng.random() < 0.85  # English knowledge base, so retrieval is a bit worse
        else:
            topic = rng.choice(texts.TOPICS)
            q, a = rng.choice(texts.SUPPORT[topic]["questions"])
            hit = rng.random() < 0.9
        grounded = rng.random() < (0.95 if hit else 0.35)
        if not grounded:
            a = rng.choice(texts.HALLUCINATED)
        return _Text(q.format_map(slots), a.format_map(slots), self._context(topic if hit else None, []), hit,
                     grounded, topic)

    def _context(self, topic: str | None, passages: list[str]) -> str:
        rng = self.rng
        if topic:
            passages = passages + rng.sample(texts.KB[topic], 2)
        while len(passages) < 3:  # the retriever always returns top-3, relevant or not
            passages.append(rng.choice(texts.ALL_PASSAGES))
        return "\n\n".join(passages)

    def _summary(self, slots: Slots) -> _Text:
        rng = self.rng
        issue, issue_short = rng.choice(texts.TICKET_ISSUES)
        agent, action = rng.choice(texts.TICKET_AGENT)
        follow_up, state = rng.choice(texts.TICKET_OUTCOME)
        ticket = (f"Summarize this ticket for the next agent.\nCustomer: Hi, {issue}.\nAgent: {agent}\n"
                  f"Customer: {follow_up}")
        summary = f"Customer reports {issue_short}. Agent {action}. Status: {state}."
        return _Text(ticket.format_map(slots), summary.format_map(slots))

    def _translation(self, language: str, document: bool, slots: Slots) -> _Text:
        rng = self.rng
        target = language if language in texts.LANGUAGE_NAMES else rng.choice(tuple(texts.LANGUAGE_NAMES))
        source, translated = rng.choice(texts.TRANSLATIONS)
        name = texts.LANGUAGE_NAMES[target]
        if document:
            ask = (f"Translate the attached {slots['pages']}-page {slots['doctype']} to {name}, keep the formatting:"
                   f" {source} [...]")
            return _Text(ask, translated[target] + " [...]")
        return _Text(f"Translate to {name}: {source}", translated[target])

    # -- feedback ----------------------------------------------------------------
    def _satisfaction(self, feat: Feature, ok: bool, text: _Text, in_burst: bool, regressed: bool,
                      latency: float) -> tuple[float, str]:
        """Chance the user is happy, and the likeliest complaint if not."""
        if not ok:
            return 0.08, "error"
        happy, reason = feat.satisfaction, ""
        if text.retrieval_hit is False:
            happy -= 0.15
        if text.grounded is False:
            happy, reason = happy - 0.35, "ungrounded"
        if in_burst:  # people who saw failures a minute ago rate the rest harshly too
            happy, reason = happy - 0.30, reason or "error"
        if regressed:
            happy, reason = happy - 0.10, reason or "verbose"
        if latency > 3 * feat.latency_median_ms:
            happy -= 0.10
        return min(0.98, max(0.02, happy)), reason

    def _feedback(self, request_id: str, ts: int, ok: bool, happy: float, reason: str) -> list[tuple[int, dict]]:
        rng = self.rng
        out: list[tuple[int, dict]] = []
        if not ok:
            if rng.random() < _ERROR_THUMBS_RATE:
                self._add(out, request_id, ts, "thumbs", int(rng.random() < happy), reason, 45)
            return out
        if rng.random() < _THUMBS_RATE:
            self._add(out, request_id, ts, "thumbs", int(rng.random() < happy), reason, 45)
        if rng.random() < _TASK_RATE:  # measured later, when the user's task completes or is abandoned
            self._add(out, request_id, ts, "task_success", int(rng.random() < happy * 0.95), "", 600)
        if rng.random() < _RATING_RATE:
            value = rng.choice((4, 5, 5)) if rng.random() < happy else rng.choice((1, 2, 2, 3))
            self._add(out, request_id, ts, "rating", value, reason, 120)
        return out

    def _add(self, out: list, request_id: str, ts: int, kind: str, value: int, reason: str,
             median_delay_s: float) -> None:
        rng = self.rng
        delay = rng.lognormvariate(math.log(median_delay_s * SECOND_MS), 1.2)
        fb_ts = ts + int(min(_MAX_FEEDBACK_DELAY_MS, max(SECOND_MS, delay)))
        if fb_ts >= self.end_ms:
            if not self.live:
                return  # not given yet at the end of the window
            fb_ts = self.end_ms - 1  # live: sent with its stretch, never stamped in the future
        event = {"feedback_id": self._uuid(), "request_id": request_id, "ts": iso(fb_ts), "kind": kind,
                 "value": value, "source": "user"}
        good = value >= 4 if kind == "rating" else value == 1
        if kind != "task_success" and rng.random() < (0.05 if good else 0.35):
            event["comment"] = rng.choice(texts.COMMENTS_UP if good else texts.COMMENTS_DOWN[reason])
        out.append((fb_ts, event))


def _pick(rng: random.Random, cum: tuple[float, ...]) -> int:
    """Index drawn by cumulative weights ending at 1.0 (cheaper than rng.choices for a handful)."""
    r = rng.random()
    for i, c in enumerate(cum):
        if r < c:
            return i
    return len(cum) - 1


def _failure_latency(rng: random.Random, error_type: str) -> float:
    if error_type == "timeout":
        return _TIMEOUT_MS + abs(rng.gauss(0, 60))  # the client gives up at 30 s, plus scheduling jitter
    if error_type == "upstream_5xx":
        return rng.lognormvariate(math.log(700), 0.8)
    if error_type == "rate_limit":
        return rng.lognormvariate(math.log(80), 0.5)
    return rng.lognormvariate(math.log(150), 0.4)  # context_length: rejected on arrival


def _session(user: int, ts: int) -> str:
    # A session is a user's half hour; a cheap integer mix keeps ids opaque but stable.
    bucket = ts // (30 * MINUTE_MS)
    return f"sess-{(user * 2654435761 + bucket * 40503) & 0xFFFFFFFF:08x}"
