"""``grounding_proxy``: the share of answer sentences with no close context sentence, per window.

A PROXY, not a label, never reported as a hallucination rate. For a request
with ``context_text``, each answer sentence is compared with every context
sentence by embedding cosine similarity; a sentence whose best match is below
``grounding.threshold`` counts as ungrounded, and the proxy is the share of
such sentences. It is cheap, useful for ordering the review queue (most
suspicious first, see the ``hallucination_sample`` job) and for watching a
trend; humans decide.

For every closed hour and day and every (service, feature) with answers that
came with context, the job takes up to ``grounding.sample_size`` requests
(lowest cityHash64 of the id, so reruns agree) and writes
``ungrounded_proxy_rate`` = ungrounded sentences / answer sentences, with the
sample size beside it.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Iterable

import numpy as np

from jobs.embeddings import Embeds
from monitor.foundation.job import Job
from monitor.foundation.metrics import PROXY_WINDOWS, Point, window_ends
from monitor.foundation.tables import requests

# A sentence ends at . ! ? or a line break, followed by space; bracketed source tags like
# "[kb:billing-1]" stay with their passage.
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_CHARS = 3


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT.split(text or "") if len(s.strip()) >= MIN_CHARS]


def proxy_scores(pairs: list[tuple[str, str]], embed, threshold: float) -> list[tuple[int, int]]:
    """(ungrounded sentences, answer sentences) per (answer, context) pair; ``embed`` maps texts to
    L2-normalised rows and is called once for all of them."""
    split = [(sentences(a), sentences(c)) for a, c in pairs]
    texts = sorted({s for a, c in split if a and c for s in a + c})
    if not texts:
        return [(0, 0)] * len(pairs)
    index = {t: i for i, t in enumerate(texts)}
    vectors = embed(texts)
    out = []
    for a, c in split:
        if not a or not c:
            out.append((0, 0))
            continue
        best = (vectors[[index[s] for s in a]] @ vectors[[index[s] for s in c]].T).max(axis=1)
        out.append((int(np.sum(best < threshold)), len(a)))
    return out


class GroundingProxyJob(Embeds, Job):
    name = "grounding_proxy"
    description = "automatic grounding proxy: answer sentences far from every context sentence (not a label)"

    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        for window, seconds in PROXY_WINDOWS.items():
            span = window_ends(start, end, seconds)
            if span is None:
                continue
            t, last = span
            while t <= last:
                yield from self._window(window, t - dt.timedelta(seconds=seconds), t)
                t += dt.timedelta(seconds=seconds)

    def _window(self, window: str, lo: dt.datetime, hi: dt.datetime) -> Iterable[Point]:
        rows = requests.grounding_sample(self.store, lo, hi, self.config.grounding.sample_size)
        if not rows:
            return
        scores = proxy_scores([(r[2], r[3]) for r in rows], self.embeddings().embed, self.config.grounding.threshold)
        totals: dict[tuple, list[int]] = {}
        for (service, feature, *_), (bad, n) in zip(rows, scores):
            for key in ((("service", service), ("feature", feature)), (("service", service),)):
                acc = totals.setdefault(key, [0, 0, 0])
                acc[0] += bad
                acc[1] += n
                acc[2] += 1
        for key, (bad, n, answers) in totals.items():
            labels = dict(key)
            yield Point(hi, window, "ungrounded_proxy_answers", labels, float(answers))
            if n:
                yield Point(hi, window, "ungrounded_proxy_rate", labels, bad / n)


class AnswerProxy(Embeds):
    """The proxy of single answers, for the review queue to order by (review.prioritize): the share of
    an answer's sentences with no close context sentence, None without context. Handed to the
    queue's sampling job by the composition root, so the review capability needs no model of its own."""

    def __init__(self, store, config, clock):
        self.store, self.config, self.clock = store, config, clock

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        if not any(c for _, c in pairs):
            return [None] * len(pairs)
        scores = proxy_scores(pairs, self.embeddings().embed, self.config.grounding.threshold)
        return [bad / n if n else None for bad, n in scores]
