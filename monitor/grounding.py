"""An automatic grounding PROXY: how much of an answer has no close sentence in its context.

This is not a label and is never reported as a hallucination rate. For a
request with ``context_text``, each answer sentence is compared with every
context sentence by embedding cosine similarity; a sentence whose best match
is below ``grounding.threshold`` counts as ungrounded. The proxy is the share
of such sentences. It is cheap, and it is useful for ordering the review queue
(most suspicious first) and for watching a trend; humans decide.
"""
from __future__ import annotations

import re

import numpy as np

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
