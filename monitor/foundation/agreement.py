"""How far an automated evaluator (an LLM judge) agrees with the reviewers, and the hallucination rate its
labels imply once its errors are corrected for. Shared by the ``evaluate`` job (its points and alerts) and the
Evaluators pages and API, so they cannot disagree.

Per judge and feature, over the requests both the judge and the reviewers labelled (the *overlap*): the
confusion matrix of the judge's label against the reviewers' majority verdict, Cohen's kappa with a 95%
bootstrap interval, and the judge's sensitivity and specificity for ``hallucinated`` (a judge's ``grounded``
and ``unsure`` both count as "not hallucinated", the same way for the matrix, the kappa and the correction).

The **estimated rate** is the Rogan-Gladen estimator over every answer the judge labelled: with p the share
it called hallucinated, (p + specificity - 1) / (sensitivity + specificity - 1), clipped to [0, 1]. Its 95%
interval draws p, the sensitivity and the specificity from their Beta posteriors (Jeffreys priors) together,
so it carries the uncertainty of the judged share and of the overlap both. Not given (with the reason) below
``min_overlap`` reviewed answers, fewer than MIN_CLASS of either verdict among them, or a judge no better than
chance on the overlap (sensitivity + specificity - 1 under MIN_YOUDEN).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monitor.foundation.stats import wilson

POSITIVE = "hallucinated"
HUMAN = ("hallucinated", "grounded")
MIN_CLASS = 5           # reviewed answers of each verdict in the overlap, for sensitivity and specificity
MIN_YOUDEN = 0.2        # sensitivity + specificity - 1: below, the correction divides by almost nothing
DRAWS = 4000


@dataclass
class Agreement:
    judge: str
    service: str
    feature: str
    judged: int = 0                    # answers the judge labelled
    judged_positive: int = 0           # of them, called hallucinated
    labels: dict[str, int] = field(default_factory=dict)   # the judge's labels, all answers
    matrix: dict[str, dict[str, int]] = field(default_factory=dict)  # judge label -> reviewers' verdict -> n
    overlap: int = 0                   # answers labelled by both (a reviewers' verdict, not a tie)
    kappa: float | None = None
    kappa_low: float | None = None
    kappa_high: float | None = None
    sensitivity: float | None = None
    sensitivity_low: float | None = None
    sensitivity_high: float | None = None
    specificity: float | None = None
    specificity_low: float | None = None
    specificity_high: float | None = None
    judged_rate: float | None = None   # the share the judge called hallucinated (biased by its errors)
    estimated_rate: float | None = None
    estimated_low: float | None = None
    estimated_high: float | None = None
    reviewed_rate: float | None = None  # the reviewers' rate over the overlap
    reason: str = ""                    # why there is no kappa or no estimate

    @property
    def cells(self) -> tuple[int, int, int, int]:
        """(true positives, false negatives, false positives, true negatives) against the reviewers."""
        tp = self.matrix.get(POSITIVE, {}).get("hallucinated", 0)
        fp = self.matrix.get(POSITIVE, {}).get("grounded", 0)
        fn = sum(v.get("hallucinated", 0) for k, v in self.matrix.items() if k != POSITIVE)
        tn = sum(v.get("grounded", 0) for k, v in self.matrix.items() if k != POSITIVE)
        return tp, fn, fp, tn

    def as_json(self) -> dict:
        d = dict(self.__dict__)
        tp, fn, fp, tn = self.cells
        d["binary"] = {"true_positive": tp, "false_negative": fn, "false_positive": fp, "true_negative": tn}
        return d


def cohen_kappa(tp: int, fn: int, fp: int, tn: int) -> float | None:
    n = tp + fn + fp + tn
    if n == 0:
        return None
    po = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    return None if pe >= 1 else (po - pe) / (1 - pe)


def _kappa_interval(tp: int, fn: int, fp: int, tn: int, seed: int) -> tuple[float | None, float | None]:
    n = tp + fn + fp + tn
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.array([tp, fn, fp, tn]) / n, size=DRAWS).astype(float)
    a, b, c, d = draws.T
    po = (a + d) / n
    pe = ((a + c) * (a + b) + (b + d) * (c + d)) / (n * n)
    ok = pe < 1
    kappas = (po[ok] - pe[ok]) / (1 - pe[ok])
    if not len(kappas):
        return None, None
    return float(np.percentile(kappas, 2.5)), float(np.percentile(kappas, 97.5))


def rogan_gladen(positive: int, judged: int, tp: int, fn: int, fp: int, tn: int,
                 seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high) of the true rate from ``positive`` of ``judged`` called positive by a judge with
    the overlap's cells; the interval from joint Beta draws of the three shares."""
    p, se, sp = positive / judged, tp / (tp + fn), tn / (tn + fp)
    estimate = min(1.0, max(0.0, (p + sp - 1) / (se + sp - 1)))
    rng = np.random.default_rng(seed)
    ps = rng.beta(positive + 0.5, judged - positive + 0.5, DRAWS)
    ses = rng.beta(tp + 0.5, fn + 0.5, DRAWS)
    sps = rng.beta(tn + 0.5, fp + 0.5, DRAWS)
    youden = ses + sps - 1
    ok = youden > 0.05
    rates = np.clip((ps[ok] + sps[ok] - 1) / youden[ok], 0.0, 1.0)
    if not len(rates):
        return estimate, 0.0, 1.0
    return estimate, float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))


def agreements(rows, min_overlap: dict[str, int] | int = 30, seed: int = 7) -> list[Agreement]:
    """``rows``: tables.feedback.JudgedCount (judge, service, feature, label, human, requests). One Agreement
    per judge and feature, and per judge over all its features (feature "")."""
    out: dict[tuple[str, str, str], Agreement] = {}
    for r in rows:
        for key in ((r.judge, r.service, r.feature), (r.judge, "", "")):
            a = out.setdefault(key, Agreement(*key))
            a.judged += r.requests
            a.labels[r.label] = a.labels.get(r.label, 0) + r.requests
            if r.label == POSITIVE:
                a.judged_positive += r.requests
            if r.human in HUMAN:
                a.matrix.setdefault(r.label, {h: 0 for h in HUMAN})[r.human] += r.requests
                a.overlap += r.requests
    for a in out.values():
        need = min_overlap.get(a.judge, 30) if isinstance(min_overlap, dict) else min_overlap
        _judge(a, need, seed)
    return sorted(out.values(), key=lambda a: (a.judge, a.service, a.feature))


def _judge(a: Agreement, need: int, seed: int) -> None:
    tp, fn, fp, tn = a.cells
    if a.judged:
        a.judged_rate = a.judged_positive / a.judged
    if a.overlap:
        a.reviewed_rate = (tp + fn) / a.overlap
    if a.overlap < need:
        a.reason = f"not enough overlap: {a.overlap} answers labelled by both the judge and reviewers (need {need})"
        return
    a.kappa = cohen_kappa(tp, fn, fp, tn)
    a.kappa_low, a.kappa_high = _kappa_interval(tp, fn, fp, tn, seed)
    if tp + fn < MIN_CLASS or tn + fp < MIN_CLASS:
        a.reason = (f"too few of one verdict in the overlap: {tp + fn} hallucinated and {tn + fp} grounded by "
                    f"reviewers (need {MIN_CLASS} of each) for the judge's sensitivity and specificity")
        return
    a.sensitivity, a.specificity = tp / (tp + fn), tn / (tn + fp)
    a.sensitivity_low, a.sensitivity_high = wilson(tp, tp + fn)
    a.specificity_low, a.specificity_high = wilson(tn, tn + fp)
    if a.sensitivity + a.specificity - 1 < MIN_YOUDEN:
        a.reason = (f"the judge is little better than chance on the overlap (sensitivity {a.sensitivity:.2f} + "
                    f"specificity {a.specificity:.2f} - 1 < {MIN_YOUDEN}): no corrected rate")
        return
    a.estimated_rate, a.estimated_low, a.estimated_high = rogan_gladen(a.judged_positive, a.judged, tp, fn, fp, tn,
                                                                       seed)
