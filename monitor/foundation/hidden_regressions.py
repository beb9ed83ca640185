"""Hidden regressions: a segment (a language, region, tenant or cohort) whose error rate got significantly
worse while its feature's did not, so the feature's average hides it. One rule, used by the
``segment_regression`` job (the SegmentRegression ticket) and by the overview for its period.

Per segment with at least ``MIN_REQUESTS`` requests in both periods, the test is Fisher's exact test,
one-sided (the segment's failures now against before; exact at the small counts a segment has, where a
z-test's normal approximation is not), and the segment counts only when:

- its rise is one that matters: at least ``MIN_RISE`` (2 points of error rate) and at least
  ``MIN_RATIO`` times its rate before;
- it is significant after Benjamini-Hochberg over every segment tested together (false discovery
  rate ``FDR``): with 50 segments, 50 tests at 5% would flag 2.5 of them by chance;
- the feature's own rate rose by less than ``MIN_RISE`` and less than a third of the segment's rise:
  otherwise the regression is in plain sight, and the feature's alerts are the ones to speak.

Segments below the volume are counted as ``too_thin``: not enough data is said, never read as health.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from scipy.stats import false_discovery_control, fisher_exact

from monitor.foundation.rollups import segment_dimensions
from monitor.foundation.stats import ratio
from monitor.foundation.tables import rollups

MIN_REQUESTS = 100
MIN_RISE = 0.02
MIN_RATIO = 1.5
FDR = 0.05


@dataclass(frozen=True)
class Counts:
    failures: int
    requests: int

    @property
    def rate(self) -> float | None:
        return ratio(self.failures, self.requests)


@dataclass(frozen=True)
class SegmentRegression:
    service: str
    feature: str
    dimension: str
    value: str
    current: Counts
    baseline: Counts
    feature_current: Counts
    feature_baseline: Counts
    p_value: float
    q_value: float  # Benjamini-Hochberg adjusted, over every segment tested with it

    def sentence(self, names: dict[str, str] | None = None) -> str:
        """'German: error rate 2.1% → 9.4% while the feature stayed at 1.2%' (``names``: language names)."""
        who = (names or {}).get(self.value, self.value) if self.dimension == "language" else \
            f"{self.dimension} {self.value}"
        before, now = self.feature_baseline.rate, self.feature_current.rate
        whole = f"stayed at {now:.1%}" if f"{before:.1%}" == f"{now:.1%}" else f"went {before:.1%} → {now:.1%}"
        return f"{who}: error rate {self.baseline.rate:.1%} → {self.current.rate:.1%} while the feature {whole}"


@dataclass(frozen=True)
class Verdict:
    regressions: list[SegmentRegression]  # most significant first
    tested: list[tuple[str, str, str, str]]  # (service, feature, dimension, value) of every segment tested
    too_thin: int  # segments with fewer than MIN_REQUESTS requests in either period


def judge(segments: dict[tuple[str, str, str, str], tuple[Counts, Counts]],
          features: dict[tuple[str, str], tuple[Counts, Counts]]) -> Verdict:
    """The rule over counts: ``segments`` (service, feature, dimension, value) -> (current, baseline) and
    ``features`` (service, feature) -> (current, baseline)."""
    tested, p_values, thin = [], [], 0
    for key, (cur, base) in segments.items():
        if cur.requests < MIN_REQUESTS or base.requests < MIN_REQUESTS or key[:2] not in features:
            thin += 1
            continue
        tested.append(key)
        # Only a segment whose rise would matter needs its test: the others could not be flagged whatever
        # their p-value, and counting them as p = 1 keeps their place in the Benjamini-Hochberg count (m),
        # which can only make the procedure stricter for the candidates. Fisher's test costs ~0.1 ms, and an
        # overview of all traffic judges thousands of segments.
        p_values.append(_p_value(cur, base) if _matters(cur, base, *features[key[:2]]) else 1.0)
    q_values = false_discovery_control(p_values, method="bh") if p_values else []
    found = []
    for key, p, q in zip(tested, p_values, q_values):
        cur, base = segments[key]
        f_cur, f_base = features[key[:2]]
        if q <= FDR and _matters(cur, base, f_cur, f_base):
            found.append(SegmentRegression(*key, cur, base, f_cur, f_base, p, float(q)))
    found.sort(key=lambda r: (r.p_value, -(r.current.rate - r.baseline.rate)))
    return Verdict(found, tested, thin)


def _matters(cur: Counts, base: Counts, f_cur: Counts, f_base: Counts) -> bool:
    """A rise that matters (MIN_RISE and MIN_RATIO) while the feature's own stayed small."""
    rise, feature_rise = cur.rate - base.rate, f_cur.rate - f_base.rate
    return rise >= MIN_RISE and cur.rate >= MIN_RATIO * base.rate and feature_rise < MIN_RISE \
        and feature_rise < rise / 3


def _p_value(cur: Counts, base: Counts) -> float:
    table = [[cur.failures, cur.requests - cur.failures], [base.failures, base.requests - base.failures]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def find(store, config, current: tuple[dt.datetime, dt.datetime], baseline: tuple[dt.datetime, dt.datetime],
         filters: dict[str, str] | None = None) -> Verdict:
    """The rule over the rollups: each segment's and feature's failures (error and timeout) and requests in
    the two periods; ``filters`` narrow to a service and feature."""
    dims = segment_dimensions(config)
    segments: dict = {}
    for span, service, feature, dimension, value, failures, requests in rollups.segment_failures(
            store, [current, baseline], dims, filters or {}):
        pair = segments.setdefault((service, feature, dimension, value), [Counts(0, 0), Counts(0, 0)])
        pair[span] = Counts(failures, requests)
    features: dict = {}
    for span, service, feature, failures, requests in rollups.feature_failures(store, [current, baseline],
                                                                                filters or {}):
        pair = features.setdefault((service, feature), [Counts(0, 0), Counts(0, 0)])
        pair[span] = Counts(failures, requests)
    return judge({k: tuple(v) for k, v in segments.items()}, {k: tuple(v) for k, v in features.items()})
