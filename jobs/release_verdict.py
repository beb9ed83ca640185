"""A release's verdict from its two sides' data: per metric the change with a 95% interval, a p-value from a
test fit for the metric, better / worse / same against a minimum effect that matters, false alarms controlled
over the metrics (Holm), and the overall pass / marginal / fail / insufficient_data.

Pure functions over counts and samples (the ``releases`` job reads them from the store):

* rates (error rate, thumbs-up, task success, reviewers' hallucination rate): Fisher's exact test when a
  cell's expected count is under 5, else the two-proportion z-test; the interval of the difference is
  Newcombe's, from the two Wilson intervals (it stays inside -1..1 and behaves at 0 and 1);
* latency and TTFT percentiles, cost per request, cost per successful outcome (a ratio of sums), output
  tokens: a percentile bootstrap of the difference (BOOTSTRAP resamples of each side, seeded by the release,
  so a rerun gives the same answer); its p-value is the share of resampled differences on the far side of
  0, doubled (the interval's inversion). A bootstrap tests the percentile itself, where Mann-Whitney would
  test a shift of the whole distribution and miss a longer tail at an unchanged median (the complaint about
  Kayenta);
* output drift: the embedding-drift vote of the drift job's methods between the two values' output texts
  (no p-value; not in the Holm family: ``worse`` when detected, a change in what users read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from monitor.foundation.config import RELEASE_RATES, ReleasesConfig
from monitor.foundation.stats import wilson

BOOTSTRAP = 1000
MIN_FEEDBACK = 30  # thumbs, task outcomes or reviews per side for a feedback rate to be judged
# Which way is worse: up for these, down for the rates of good outcomes.
HIGHER_IS_BETTER = ("thumbs_up_rate", "task_success_rate")
PERCENTILES = {"latency_p50_ms": 50, "latency_p95_ms": 95, "latency_p99_ms": 99}


@dataclass
class Judged:
    """One metric of a release."""
    metric: str
    baseline: float | None
    candidate: float | None
    n_baseline: int
    n_candidate: int
    test: str
    change: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    verdict: str = "insufficient_data"
    reason: str = ""
    critical: bool = False
    min_effect: float = 0.0

    @property
    def relative(self) -> float | None:
        if self.change is None or not self.baseline:
            return None
        return self.change / abs(self.baseline)

    def as_dict(self) -> dict:
        return {"baseline": {"value": self.baseline, "n": self.n_baseline},
                "candidate": {"value": self.candidate, "n": self.n_candidate},
                "change": self.change, "change_low": self.low, "change_high": self.high,
                "relative_change": self.relative, "p_value": self.p_value, "p_adjusted": self.p_adjusted,
                "test": self.test, "min_effect": self.min_effect,
                "min_effect_kind": "absolute" if self.metric in RELEASE_RATES else "relative",
                "higher_is_better": self.metric in HIGHER_IS_BETTER, "critical": self.critical,
                "verdict": self.verdict, "reason": self.reason}


# -- rates --------------------------------------------------------------------------------------------------
def rate(metric: str, k_base: int, n_base: int, k_cand: int, n_cand: int, min_n: int) -> Judged:
    base = k_base / n_base if n_base else None
    cand = k_cand / n_cand if n_cand else None
    if min(n_base, n_cand) < min_n:
        return Judged(metric, base, cand, n_base, n_cand, "two-proportion",
                      reason=f"too few: {n_base} baseline and {n_cand} candidate, {min_n} needed on each side")
    pooled = (k_base + k_cand) / (n_base + n_cand)
    expected = min(pooled * n_base, (1 - pooled) * n_base, pooled * n_cand, (1 - pooled) * n_cand)
    if expected < 5:
        test = "fisher"
        p = float(stats.fisher_exact([[k_cand, n_cand - k_cand], [k_base, n_base - k_base]])[1])
    else:
        test = "two-proportion z"
        se = math.sqrt(pooled * (1 - pooled) * (1 / n_base + 1 / n_cand))
        p = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(cand - base) / se))
    # Newcombe's hybrid score interval for cand - base.
    lb, ub = wilson(k_base, n_base)
    lc, uc = wilson(k_cand, n_cand)
    d = cand - base
    low = d - math.sqrt((cand - lc) ** 2 + (ub - base) ** 2)
    high = d + math.sqrt((uc - cand) ** 2 + (base - lb) ** 2)
    return Judged(metric, base, cand, n_base, n_cand, test, d, low, high, p)


# -- samples --------------------------------------------------------------------------------------------------
def _resample(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, n, size=(BOOTSTRAP, n))


def bootstrap(metric: str, base: np.ndarray, cand: np.ndarray, statistic, min_n: int, seed: int,
              n_base: int | None = None, n_cand: int | None = None, weights=None) -> Judged:
    """``statistic(values, axis)`` of each side (a percentile or a mean over the last axis); with ``weights``
    (base_w, cand_w) the statistic is sum(values) / sum(weights) (a ratio of sums). ``n_*`` the sides' whole
    counts when the samples are capped."""
    return bootstrap_all({metric: statistic}, base, cand, min_n, seed, n_base, n_cand, weights)[0]


def bootstrap_all(statistics: dict, base: np.ndarray, cand: np.ndarray, min_n: int, seed: int,
                  n_base: int | None = None, n_cand: int | None = None, weights=None) -> list[Judged]:
    """``bootstrap`` of several statistics of the same two samples (latency p50, p95 and p99) from one set of
    resamples: each side is drawn and gathered once, not once a statistic."""
    nb, nc = n_base if n_base is not None else len(base), n_cand if n_cand is not None else len(cand)
    points = {m: (_point(base, f, weights and weights[0]), _point(cand, f, weights and weights[1]))
              for m, f in statistics.items()}
    if min(nb, nc) < min_n or not len(base) or not len(cand):
        return [Judged(m, *points[m], nb, nc, "bootstrap",
                       reason=f"too few: {nb} baseline and {nc} candidate, {min_n} needed on each side")
                for m in statistics]
    rng = np.random.default_rng(seed)
    ib, ic = _resample(rng, len(base)), _resample(rng, len(cand))
    rb, rc = base[ib], cand[ic]
    out = []
    for metric, statistic in statistics.items():
        if weights is None:
            sb, sc = statistic(rb, axis=1), statistic(rc, axis=1)
        else:
            wb, wc = weights
            with np.errstate(divide="ignore", invalid="ignore"):
                sb = rb.sum(axis=1) / wb[ib].sum(axis=1)
                sc = rc.sum(axis=1) / wc[ic].sum(axis=1)
        diffs = sc - sb
        diffs = diffs[np.isfinite(diffs)]
        point_b, point_c = points[metric]
        if point_b is None or point_c is None or len(diffs) < BOOTSTRAP // 2:
            out.append(Judged(metric, point_b, point_c, nb, nc, "bootstrap", reason="no successful outcome on a side"))
            continue
        low, high = (float(x) for x in np.percentile(diffs, [2.5, 97.5]))
        p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
        out.append(Judged(metric, point_b, point_c, nb, nc, "bootstrap", point_c - point_b, low, high,
                          float(min(1.0, max(p, 1 / BOOTSTRAP)))))
    return out


def _point(values: np.ndarray, statistic, weights) -> float | None:
    if not len(values):
        return None
    if weights is not None:
        total = float(weights.sum())
        return float(values.sum()) / total if total else None
    return float(statistic(values[None, :], axis=1)[0])


def percentile(q: float):
    return lambda values, axis: np.percentile(values, q, axis=axis)


def mean(values, axis):
    return values.mean(axis=axis)


# -- the whole release ----------------------------------------------------------------------------------------
@dataclass
class Verdict:
    verdict: str                    # pass | marginal | fail | insufficient_data
    reason: str
    metrics: dict[str, Judged] = field(default_factory=dict)


def decide(judged: list[Judged], config: ReleasesConfig, n_base: int, n_cand: int) -> Verdict:
    """Holm over the metrics with a p-value, then each metric's verdict, then the release's."""
    for j in judged:
        j.critical = j.metric in config.critical
        j.min_effect = config.effect(j.metric)
    family = sorted((j for j in judged if j.p_value is not None), key=lambda j: j.p_value)
    m, running = len(family), 0.0
    for i, j in enumerate(family):
        running = max(running, min(1.0, (m - i) * j.p_value))
        j.p_adjusted = running
    for j in judged:
        if j.metric == "output_drift" or j.p_value is None:
            continue
        big = (abs(j.change) >= j.min_effect if j.metric in RELEASE_RATES
               else j.baseline not in (None, 0) and abs(j.change) / abs(j.baseline) >= j.min_effect)
        if j.p_adjusted < config.alpha and big:
            up_is_good = j.metric in HIGHER_IS_BETTER
            j.verdict = "better" if (j.change > 0) == up_is_good else "worse"
        else:
            j.verdict = "same"
            j.reason = ("not significant after Holm's correction" if j.p_adjusted >= config.alpha
                        else f"smaller than the minimum effect ({_effect(j)})")
    metrics = {j.metric: j for j in judged}
    missing = [f"{side}: {n} of {config.min_requests} requests" for side, n in
               (("baseline", n_base), ("candidate", n_cand)) if n < config.min_requests]
    if missing:
        return Verdict("insufficient_data", "; ".join(missing), metrics)
    worse = [j.metric for j in judged if j.verdict == "worse"]
    critical = [w for w in worse if metrics[w].critical]
    not_judged = [j.metric for j in judged if j.verdict == "insufficient_data" and j.critical]
    note = f"; not judged for lack of data: {', '.join(not_judged)}" if not_judged else ""
    if critical:
        return Verdict("fail", f"worse on {', '.join(critical)}" + (
            f" (and {', '.join(w for w in worse if w not in critical)})" if len(worse) > len(critical) else "") + note,
            metrics)
    if worse:
        return Verdict("marginal", f"worse only on non-critical metrics: {', '.join(worse)}" + note, metrics)
    return Verdict("pass", "no metric worse" + note, metrics)


def _effect(j: Judged) -> str:
    return f"{j.min_effect * 100:g} points" if j.metric in RELEASE_RATES else f"{j.min_effect:.0%}"
