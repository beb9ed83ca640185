"""Embedding drift per (service, feature): has what users ask, or what we answer, changed?

For every closed window (``drift.windows``, default 1h and 1d; a window is
compared when a multiple of its length has passed) and every (service,
feature) with answered requests in it, the job compares a current sample with
a reference sample:

- reference: ``drift.reference`` {from, to} when pinned, else the
  ``reference_days`` (default 7) before the current window;
- sample: up to ``sample_size`` answered requests per side, the lowest
  cityHash64(request_id), so a rerun draws the same requests; fewer than
  ``min_samples`` on a side records ``insufficient_data`` and nothing else;
- vectors: ``input_embedding`` as sent when every sampled request has one,
  else the texts encoded with jobs.embeddings (cached);
- decision: jobs.drift_methods.compare on input texts and on output texts,
  each side on the requests that have text there (blank texts are left out; a
  side with fewer than ``min_samples`` texts is not decided and says so);
- a ``drift_reports`` row with the numbers, an explanation of what is new
  when drift is detected, and an Evidently snapshot that also holds value
  drift of latency, tokens and cost.

Degenerate windows (one canned answer, a handful of templates, blank or
very long texts) degrade a comparison, never fail it: each side and each
method is computed on its own and a method that cannot run says why in the
summary (its points are not written); the explanation and the Evidently
report come after the numbers, each in its own try, so a picture that cannot
be drawn costs only itself (the summary's ``report_omitted`` per part, or
its ``report_error`` and an empty snapshot). The row's status stays
``ok``.

A failure in one stratum (a bug, the model) does not stop the others; the run
is then recorded as failed, so the next run retries its windows. A store error
stops the run.
"""
from __future__ import annotations

import datetime as dt
import logging
import sys
import uuid
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np
import pandas as pd

from jobs import drift_methods as drift
from jobs.embeddings import Embeds
from monitor.foundation.job import Job
from monitor.foundation.metrics import WINDOWS, Point, window_ends
from monitor.foundation.storage import StoreError
from monitor.foundation.tables import drift_reports, requests, rollups
from monitor.foundation.tables.drift_reports import DriftExplanation, DriftReport, DriftSummary, SideSummary

log = logging.getLogger(__name__)


def report_id(service: str, feature: str, window: str, end: dt.datetime) -> str:
    """Stable per (stratum, window, end), so a rerun replaces its report instead of adding one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nlpmon:drift/{service}/{feature}/{window}/{end.isoformat()}"))


@dataclass(frozen=True)
class Picture:
    """The Evidently report of a comparison: its snapshot ("" when it could not be drawn, and why), the
    value drift it shows, and the parts left out of it."""

    snapshot: str
    numeric: dict
    error: str | None
    omitted: dict[str, str]


class DriftJob(Embeds, Job):
    name = "drift"
    description = "embedding drift of input and output texts against a reference window, with Evidently reports"

    def recompute_horizon(self) -> dt.timedelta:
        # A window is sampled once when it closes: late rows barely move a 1,000-text sample,
        # and every recomputed window would be another model and Evidently run.
        return dt.timedelta(0)

    def catchup_limit(self) -> dt.timedelta:
        return self.config.drift.catchup_max

    def check(self, load: bool = True) -> int | None:
        """Load the model and encode a text (the dimension), or with ``load`` False only check its files
        (None); raises EmbeddingError naming embeddings.model_path."""
        if not load:
            self.embeddings().check_files()
            return None
        return self.embeddings().check()

    # -- windows and strata -------------------------------------------------------
    def compute(self, start: dt.datetime, end: dt.datetime) -> Iterable[Point]:
        from tqdm import tqdm
        plan = self.plan(start, end)
        failures = []
        for service, feature, window, lo, t in tqdm(plan, desc="drift comparisons", unit="cmp", file=sys.stderr,
                                                    disable=not self.show_progress or not plan):
            try:
                yield from self.compare_window(service, feature, window, lo, t)
            except StoreError:
                raise
            except Exception as exc:  # one stratum's failure is retried with the run, not hidden
                log.exception("drift %s/%s %s ending %s failed", service, feature, window, t)
                failures.append(f"{service}/{feature} {window} {t:%Y-%m-%d %H:%M}: {type(exc).__name__}: {exc}")
        if failures:
            raise RuntimeError(f"{len(failures)} drift comparison(s) failed: " + "; ".join(failures[:3]))

    def plan(self, start: dt.datetime, end: dt.datetime) -> list[tuple]:
        """(service, feature, window, window start, window end) of every comparison due in (start, end]."""
        cfg = self.config.drift
        windows = set(cfg.windows) | {w for t in cfg.targets for w in (t.windows or ())}
        out = []
        for window in sorted(windows, key=WINDOWS.get):
            seconds = WINDOWS[window]
            steps = {int(e.total_seconds()) for e in [cfg.every] + [t.every for t in cfg.targets] if e} | {seconds}
            for step in sorted(steps):
                span = window_ends(start, end, step)
                if span is None:
                    continue
                t, last = span
                while t <= last:
                    lo = t - dt.timedelta(seconds=seconds)
                    for service, feature in self._strata(lo, t):
                        if self._due(service, feature, window, step):
                            out.append((service, feature, window, lo, t))
                    t += dt.timedelta(seconds=step)
        return sorted(out, key=lambda p: (p[4], WINDOWS[p[2]], p[0], p[1]))

    def _due(self, service: str, feature: str, window: str, step: int) -> bool:
        cfg = self.config.drift
        target = cfg.target_for(service, feature)
        if target is not None and not target.enabled:
            return False
        wanted = cfg.windows if target is None or target.windows is None else target.windows
        every = (target.every if target is not None and target.every else None) or cfg.every
        return window in wanted and step == (int(every.total_seconds()) if every else WINDOWS[window])

    def _strata(self, lo: dt.datetime, hi: dt.datetime) -> list[tuple[str, str]]:
        return requests.answered_strata(self.store, lo, hi)

    def reference_range(self, service: str, feature: str, current_start: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        cfg = self.config.drift
        target = cfg.target_for(service, feature)
        pinned = (target.reference if target and target.reference else None) or cfg.reference
        if pinned is not None:
            return pinned.from_, pinned.to
        days = (target.reference_days if target and target.reference_days else None) or cfg.reference_days
        return current_start - dt.timedelta(days=days), current_start

    def _sample(self, service: str, feature: str, lo: dt.datetime, hi: dt.datetime) -> pd.DataFrame:
        rows = requests.drift_sample(self.store, service, feature, lo, hi, self.config.drift.sample_size)
        return pd.DataFrame(rows, columns=["request_id", "input_text", "output_text", "input_embedding", "latency_ms",
                                           "input_tokens", "output_tokens", "cost_usd"])

    # -- one comparison -----------------------------------------------------------
    def compare_one(self, service: str, feature: str, window: str, end: dt.datetime) -> int:
        """Compare one window ending at ``end`` now and write its points (not a run: for the demo's
        incident hours, the scheduler compares every window as it closes). Returns the points written."""
        return self._write(self.compare_window(service, feature, window,
                                               end - dt.timedelta(seconds=WINDOWS[window]), end))

    def compare_window(self, service: str, feature: str, window: str, lo: dt.datetime,
                       end: dt.datetime) -> Iterable[Point]:
        cfg = self.config.drift
        ref_lo, ref_hi = self.reference_range(service, feature, lo)
        ref, cur = self._sample(service, feature, ref_lo, ref_hi), self._sample(service, feature, lo, end)
        base = {"service": service, "feature": feature}
        yield Point(end, window, "embedding_drift_reference_samples", base, float(len(ref)))
        yield Point(end, window, "embedding_drift_current_samples", base, float(len(cur)))
        samples = {"reference": len(ref), "current": len(cur)}
        report = DriftReport(report_id(service, feature, window, end), end, window, service, feature,
                             "insufficient_data", False, ref_lo, ref_hi,
                             DriftSummary(samples, cfg.min_samples, {"from": ref_lo.isoformat(), "to": ref_hi.isoformat()},
                                          {"from": lo.isoformat(), "to": end.isoformat()},
                                          language_mix=self._language_mix(service, feature, (ref_lo, ref_hi), (lo, end))))
        if min(len(ref), len(cur)) < cfg.min_samples:
            drift_reports.insert(self.store, report, self.clock.now())
            return

        vectors, source = self._vectors(ref, cur)
        sides: dict[str, SideSummary] = {}
        explanation: dict[str, DriftExplanation] = {}
        explanation_error: dict[str, str] = {}
        for side in drift.SIDES:
            (r_vec, r_keep), (c_vec, c_keep) = vectors[side]
            if min(len(r_vec), len(c_vec)) < cfg.min_samples:
                result = drift.Comparison.not_compared(
                    f"too few {side} texts: reference {len(r_vec)}, current {len(c_vec)} (drift.min_samples "
                    f"{cfg.min_samples}); {len(ref) - len(r_vec)} reference and {len(cur) - len(c_vec)} current "
                    f"requests have a blank {side} text", cfg.min_methods)
            else:
                result = drift.compare(r_vec, c_vec, cfg.quantile, cfg.min_methods)
            sides[side] = SideSummary.from_dict({**result.as_dict(),
                                                 "samples": {"reference": len(r_vec), "current": len(c_vec)}})
            if not result.decided:
                log.info("drift %s/%s %s ending %s: %s texts not decided: %s", service, feature, window, end, side,
                         result.undecided_reason)
            labels = {**base, "text": side}
            for method, r in result.methods.items():
                if r.ran:
                    yield Point(end, window, "embedding_drift_score", {**labels, "method": method}, r.score)
                    yield Point(end, window, "embedding_drift_detected", {**labels, "method": method},
                                float(r.detected))
            if result.decided:
                yield Point(end, window, "embedding_drift_score", {**labels, "method": "combined"}, result.score)
                yield Point(end, window, "embedding_drift_detected", {**labels, "method": "combined"},
                            float(result.detected))
            if result.detected:
                column = f"{side}_text"
                try:
                    explanation[side] = DriftExplanation.from_dict(drift.explain(
                        r_vec, c_vec, cur[column][c_keep].tolist(), cfg.explain_examples, ref[column][r_keep].tolist()))
                except Exception as exc:  # the explanation illustrates the decision; it never costs it
                    log.warning("drift %s/%s %s ending %s: %s explanation failed", service, feature, window, end,
                                side, exc_info=True)
                    explanation_error[side] = f"{type(exc).__name__}: {exc}"[:500]
        picture = self._report(vectors, ref, cur)
        summary = replace(report.summary, embedding_source=source, sides=sides, numeric=picture.numeric,
                          report_error=picture.error, report_omitted=picture.omitted,
                          explanation_error=explanation_error)
        drift_reports.insert(self.store, replace(report, status="ok",
                                                 drift_detected=any(s.detected for s in sides.values()),
                                                 summary=summary, explanation=explanation, snapshot=picture.snapshot),
                             self.clock.now())

    def _language_mix(self, service: str, feature: str, reference: tuple, current: tuple) -> dict:
        """The language mix of all the window's requests (not the sample), from the segment rollups."""
        counts: list[dict[str, int]] = [{}, {}]
        for span, _, _, _, language, _, requests in rollups.segment_failures(
                self.store, [current, reference], ("language",), {"service": service, "feature": feature}):
            counts[span][language] = int(requests)
        return drift.language_mix(counts[1], counts[0])

    def _report(self, vectors: dict, ref: pd.DataFrame, cur: pd.DataFrame) -> Picture:
        """The Evidently snapshot as text, after the numbers and in its own try: "" with its ``error`` when
        it cannot be drawn, the parts it could not draw in ``omitted``."""
        try:
            snapshot, omitted = drift.report({s: v[0][0] for s, v in vectors.items()},
                                             {s: v[1][0] for s, v in vectors.items()}, ref, cur,
                                             self.config.drift.quantile)
            parts = {k: v for k, v in omitted.items() if k != "report"}
            if snapshot is None:
                return Picture("", {}, omitted.get("report", "nothing could be drawn"), parts)
            return Picture(snapshot.dumps(), drift.numeric_drift(snapshot), None, parts)
        except Exception as exc:  # a picture of the numbers never costs the numbers
            log.warning("drift report failed", exc_info=True)
            return Picture("", {}, f"{type(exc).__name__}: {exc}"[:500], {})

    def _vectors(self, ref: pd.DataFrame, cur: pd.DataFrame) -> tuple[dict, str]:
        """Per side, ((reference vectors, rows kept), (current vectors, rows kept)) and where they came from.

        A side keeps the requests with text there (not blank); ``input_embedding`` as sent stands for
        the input when every sampled request has one of the same dimension.
        """
        embedder = self.embeddings()
        given = [len(e) > 0 for e in pd.concat([ref["input_embedding"], cur["input_embedding"]])]
        dims = {len(e) for e in pd.concat([ref["input_embedding"], cur["input_embedding"]]) if len(e)}
        use_given = all(given) and len(dims) == 1

        def has_text(frame: pd.DataFrame, column: str) -> np.ndarray:
            return np.fromiter((bool(t and t.strip()) for t in frame[column]), dtype=bool, count=len(frame))

        keep = {"output": (has_text(ref, "output_text"), has_text(cur, "output_text"))}
        keep["input"] = ((np.ones(len(ref), bool), np.ones(len(cur), bool)) if use_given
                         else (has_text(ref, "input_text"), has_text(cur, "input_text")))
        encoded_sides = ["output"] if use_given else ["output", "input"]
        texts = [t for side in encoded_sides for frame, mask in zip((ref, cur), keep[side])
                 for t in frame[f"{side}_text"][mask]]
        encoded = embedder.embed(texts, progress=self.show_progress)
        out, k = {}, 0
        for side in encoded_sides:
            pair = []
            for mask in keep[side]:
                n = int(mask.sum())
                pair.append((encoded[k:k + n], mask))
                k += n
            out[side] = tuple(pair)
        if use_given:
            out["input"] = tuple((np.vstack(frame["input_embedding"].map(np.asarray)).astype(np.float32), mask)
                                 for frame, mask in zip((ref, cur), keep["input"]))
        source = f"model {embedder.model_id}" + ("; input: input_embedding as sent" if use_given else "")
        return {s: out[s] for s in drift.SIDES}, source
