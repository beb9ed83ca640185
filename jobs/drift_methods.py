"""Embedding drift between a reference and a current sample: decide, explain, report.

Three of Evidently's embedding drift methods run on the same vectors, each in
its bootstrap mode, so a method's threshold comes from the reference's own
variability at the sample size in hand instead of a constant tuned for one
corpus and one N:

- ``domain_classifier``: ROC AUC of a classifier told to separate the samples
  (``ModelDriftMethod``), against the AUC of random guesses;
- ``mmd``: maximum mean discrepancy with an RBF kernel (``MMDDriftMethod``);
- ``centroid_cosine``: cosine distance between the sample means
  (``DistanceDriftMethod(dist="cosine")``).

The combined decision is drift when ``drift.min_methods`` of them (default 2)
agree. Measured on topic pools (tests/test_drift_quality.py): 20/20 detections
with 30% of the current sample on a new topic and 0/20 false alarms, N=1,000.

Evidently's methods write into the frames they are given (the classifier adds
a target column), so every call gets its own frame.

Degenerate samples (canned replies, classifiers' labels, a few templates,
texts that agree up to the model's maximum sequence length) degrade a
comparison instead of failing it. Each method runs on its own; one that cannot
run records why (``MethodResult.error``) and the vote counts the methods that
ran: fewer than ``min_methods`` leaves the side "not decided" (not detected,
with the reason). What each method needs, checked before it runs:

- ``domain_classifier``: nothing beyond two samples; identical samples give an
  AUC of 0.5, below the random-guess quantile, so they are not drift;
- ``mmd``: a kernel bandwidth. Evidently takes the median pairwise distance
  within the reference (and between the samples); when half the pairs are the
  same vector it is 0, the kernel is undefined and its threshold NaN, so the
  method is not run;
- ``centroid_cosine``: on a constant reference its bootstrap threshold is 0 and
  floating-point noise would be "drift", so the distance must also exceed
  ``NOISE``; any real change of a constant sample (a new template) still does.

The Evidently report is a picture of the numbers, never a condition for them:
``report`` leaves out the widgets it cannot draw and says why.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

METHODS = ("domain_classifier", "mmd", "centroid_cosine")
NUMERIC_COLUMNS = ("latency_ms", "input_tokens", "output_tokens", "cost_usd")
SIDES = ("input", "output")
# Evidently's embedding widget draws a 2-D picture of up to 2,500 points per side.
TSNE_SAMPLE = 500
# A cosine distance between centroids at or below this is rounding, not drift: one text encoded twice
# in bfloat16 (other batch) lands up to ~6e-6 away; 2% of a constant sample replaced by a new
# template moves the centroid by ~2e-4 (the distance grows with the square of the share).
NOISE = 1e-5
# The embedding picture is a Gaussian density of each sample's 2-D projection: a sample of one
# distinct vector is one point, and scipy's gaussian_kde raises on its singular covariance. (Two
# distinct vectors lie on a line and may or may not be drawn: report() tries.)
PICTURE_MIN_DISTINCT = 2


class _PlanePicture:
    """Stands in for the t-SNE that Evidently's embedding widget uses only to draw its picture.

    Barnes-Hut t-SNE on repetitive production texts (templates, FAQs, retries) took 2 to 40 s
    per side on this hardware, erratically, for a picture; a PCA projection takes milliseconds
    and is deterministic. Drift scores never depend on it.
    """

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def fit_transform(self, x):
        from sklearn.decomposition import PCA
        x = np.asarray(x, dtype=np.float64)
        if min(x.shape) < 2:
            return np.zeros((len(x), 2))
        return PCA(n_components=2, random_state=0).fit_transform(x)


@dataclass
class MethodResult:
    """One method's result; ``error`` says why it could not run (then score and detected are None)."""
    score: float | None
    detected: bool | None
    error: str | None = None

    @property
    def ran(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return {"score": self.score, "detected": self.detected, "error": self.error}


@dataclass
class Comparison:
    """The methods' results for one text side and their vote.

    ``reason`` is set when the side was not compared at all (too few texts). The vote counts the
    methods that ran; fewer than ``min_methods`` leaves the side not decided, which is not drift.
    """
    methods: dict[str, MethodResult]
    min_methods: int
    reason: str | None = None

    @classmethod
    def not_compared(cls, reason: str, min_methods: int) -> Comparison:
        return cls({}, min_methods, reason)

    @property
    def ran(self) -> list[str]:
        return [m for m, r in self.methods.items() if r.ran]

    @property
    def votes(self) -> int:
        return sum(bool(self.methods[m].detected) for m in self.ran)

    @property
    def decided(self) -> bool:
        return self.reason is None and len(self.ran) >= self.min_methods

    @property
    def detected(self) -> bool:
        return self.decided and self.votes >= self.min_methods

    @property
    def score(self) -> float | None:
        """Share of the methods that ran which detect drift; None when not decided."""
        return self.votes / len(self.ran) if self.decided else None

    @property
    def undecided_reason(self) -> str | None:
        if self.decided:
            return None
        if self.reason is not None:
            return self.reason
        failed = "; ".join(f"{m}: {r.error}" for m, r in self.methods.items() if not r.ran)
        return (f"only {len(self.ran)} of {len(self.methods)} methods could run and drift.min_methods is "
                f"{self.min_methods} ({failed})")

    def as_dict(self) -> dict:
        out = {"detected": self.detected, "decided": self.decided, "score": self.score,
               "min_methods": self.min_methods, "methods_run": len(self.ran), "votes": self.votes,
               "methods": {k: v.as_dict() for k, v in self.methods.items()}}
        if not self.decided:
            out["reason"] = self.undecided_reason
        return out


def _random_auc(y_test, i: int) -> float:
    """Evidently's ``calc_roc_auc_random`` (the AUC of the i-th random guess, 100 of them per domain classifier
    run), the same number without scikit-learn's checks of its input on every call, which were 29% of a
    drift comparison: for scores without ties the AUC is the rank-sum statistic of the positive class."""
    np.random.seed(i)
    scores = np.random.rand(len(y_test))
    positive = np.asarray(y_test) == 1
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="mergesort")] = np.arange(1, len(scores) + 1)
    n1 = int(positive.sum())
    n0 = len(scores) - n1
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _mmd_bootstrap(K, m, n, x_idx, y_idx):
    """Evidently's ``MMD2u_bstrp``, computed from how often each row was drawn: the sum of the submatrix
    K[x, x] is w'Kw for the draw counts w, a product with K rather than a copy of the submatrix built from
    an index of Python lists (which was 24% of a drift comparison). Equal up to rounding (1e-12)."""
    size = K.shape[0]
    wx = np.bincount(x_idx, minlength=size).astype(K.dtype)
    wy = np.bincount(y_idx, minlength=size).astype(K.dtype)
    diag = K.diagonal()
    kx, ky = K @ wx, K @ wy
    return (1.0 / (m * (m - 1.0)) * (wx @ kx - diag[x_idx].sum())
            + 1.0 / (n * (n - 1.0)) * (wy @ ky - diag[y_idx].sum())
            - 2.0 / (m * n) * (wx @ ky))


def _pairwise_distances(*args, **kwargs):
    """scikit-learn's pairwise_distances on this thread: the MMD method asks for every core (``n_jobs=-1``),
    whose thread pool costs more than the 1,000 x 1,000 distances it computes."""
    from sklearn.metrics import pairwise_distances
    return pairwise_distances(*args, **{**kwargs, "n_jobs": 1})


EVIDENTLY_ORIGINALS: dict = {}  # what _faster_evidently replaced (a test compares them)


@functools.cache
def _faster_evidently() -> None:
    """Put the helpers above in place of Evidently's, which its methods look up when they run (once a process)."""
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as methods
    for name, ours in (("calc_roc_auc_random", _random_auc), ("MMD2u_bstrp", _mmd_bootstrap),
                       ("pairwise_distances", _pairwise_distances)):
        EVIDENTLY_ORIGINALS[name] = getattr(methods, name)
        setattr(methods, name, ours)


class _CentroidCosine:
    """Evidently's ``DistanceDriftMethod(dist="cosine", bootstrap=True)`` on arrays: the same draws (its seeds,
    its sample sizes) and the same numbers (to rounding), without indexing a DataFrame 200 times a run,
    which made it a third of a comparison."""

    def __init__(self, quantile: float):
        self.quantile = quantile

    def __call__(self, current: pd.DataFrame, reference: pd.DataFrame) -> tuple[float, bool, str]:
        from evidently.legacy.metrics.data_drift.embedding_drift_methods import N_BOOTSTRAP
        from scipy.spatial.distance import cosine
        ref, cur = reference.to_numpy(), current.to_numpy()
        m, n = len(ref), len(cur)
        score = cosine(ref.mean(axis=0), cur.mean(axis=0))
        ref_size, cur_size = int(m ** 2 / (m + n)), int(n * m / (m + n))
        null = []
        for i in range(N_BOOTSTRAP):
            np.random.seed(i)
            a, b = np.random.choice(m, ref_size), np.random.choice(m, cur_size)
            null.append(cosine(ref[a].mean(axis=0), ref[b].mean(axis=0)))
        return score, score > np.percentile(null, 100 * self.quantile), "distance"


def _methods(quantile: float) -> dict:
    from evidently.metrics.embeddings import MMDDriftMethod, ModelDriftMethod
    _faster_evidently()
    return {"domain_classifier": ModelDriftMethod(bootstrap=True, quantile_probability=quantile),
            "mmd": MMDDriftMethod(bootstrap=True, quantile_probability=quantile),
            "centroid_cosine": _CentroidCosine(quantile)}


def _frame(vectors: np.ndarray, prefix: str = "e") -> pd.DataFrame:
    return pd.DataFrame(np.asarray(vectors, dtype=np.float64), columns=[f"{prefix}{i}" for i in range(vectors.shape[1])])


def compare(reference: np.ndarray, current: np.ndarray, quantile: float = 0.95, min_methods: int = 2) -> Comparison:
    """Run the three methods on (reference, current) vectors and combine the votes of those that ran.

    A method that cannot run on these vectors (see preconditions(), or it raises, or its score is not
    a number) is recorded with its reason; the others still count.
    """
    if reference.shape[1] != current.shape[1]:
        raise ValueError(f"reference vectors have {reference.shape[1]} dimensions, current {current.shape[1]}")
    blocked = preconditions(reference, current)
    out = {}
    for name, method in _methods(quantile).items():
        reason = blocked.get(name)
        if reason is None:
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    score, detected, _ = method(_frame(current), _frame(reference))
                score, detected = float(score), bool(detected)
            except Exception as exc:  # a method's failure is its own result, never the comparison's
                reason = f"{type(exc).__name__}: {exc}"[:500]
            else:
                if not math.isfinite(score):
                    reason = f"its score is not a number ({score})"
                elif name == "centroid_cosine" and score <= NOISE:
                    detected = False
        out[name] = MethodResult(None, None, reason) if reason else MethodResult(score, detected)
    return Comparison(out, min_methods)


def distinct(vectors: np.ndarray) -> int:
    """How many different vectors (exact equality: the same text always gets the same cached vector)."""
    return len(np.unique(np.asarray(vectors), axis=0)) if len(vectors) else 0


def _median_distance(x: np.ndarray, y: np.ndarray | None = None) -> float:
    """The median pairwise Euclidean distance exactly as MMDDriftMethod takes it for its RBF bandwidth
    (at most 1,000 rows of each sample, drawn with random_state=0)."""
    from sklearn.metrics import pairwise_distances
    fx = _frame(x)
    a = fx.sample(min(len(fx), 1000), random_state=0)
    b = None if y is None else (fy := _frame(y)).sample(min(len(fy), 1000), random_state=0)
    return float(np.median(pairwise_distances(a, b, metric="euclidean")))


def preconditions(reference: np.ndarray, current: np.ndarray) -> dict[str, str]:
    """Why a method cannot run on these vectors, per method (absent: it can)."""
    n_ref, n_cur = len(reference), len(current)
    if min(n_ref, n_cur) < 2:
        return dict.fromkeys(METHODS, f"needs at least 2 vectors per sample (reference {n_ref}, current {n_cur})")
    if not (np.isfinite(reference).all() and np.isfinite(current).all()):
        return dict.fromkeys(METHODS, "the vectors contain NaN or infinite values")
    blocked = {}
    # Distances below this are rounding (sklearn computes |x|^2 + |y|^2 - 2xy), not a difference.
    tol = 1e-6 * max(float(np.median(np.linalg.norm(reference, axis=1))), 1e-12)
    if _median_distance(reference) <= tol:
        blocked["mmd"] = (f"the reference sample is (nearly) constant ({distinct(reference)} distinct of {n_ref} "
                          "vectors): at least half of its pairs are the same vector, so the kernel bandwidth "
                          "(their median distance) is 0 and the bootstrap threshold undefined")
    elif _median_distance(reference, current) <= tol:
        blocked["mmd"] = (f"at least half of the reference-current pairs are the same vector ({distinct(reference)} "
                          f"distinct of {n_ref} reference, {distinct(current)} of {n_cur} current vectors): "
                          "the kernel bandwidth (their median distance) is 0")
    return blocked


# -- explanation ----------------------------------------------------------------
def explain(reference: np.ndarray, current: np.ndarray, texts: list[str], examples: int = 10,
            ref_texts: list[str] | None = None) -> dict:
    """What is new in the current sample: its texts farthest from every reference text, and
    clusters of such texts (new topics) with their size and examples.

    A current text is "novel" when its nearest reference neighbour is farther than the
    95th percentile of reference texts' distance to their own nearest neighbour.
    Vectors are L2-normalised, so a dot product is a cosine similarity.
    """
    sim = current @ reference.T
    nearest = sim.argmax(axis=1)
    novelty = 1.0 - sim.max(axis=1)
    ref_sim = reference @ reference.T
    np.fill_diagonal(ref_sim, -np.inf)
    # Duplicates in the reference would make every leave-one-out distance 0, so they are dropped first.
    ref_novelty = 1.0 - ref_sim.max(axis=1)
    ref_novelty = ref_novelty[np.isfinite(ref_novelty)]
    cutoff = float(np.quantile(ref_novelty, 0.95)) if len(ref_novelty) else 0.0

    farthest, seen = [], set()
    for i in np.argsort(-novelty):
        if texts[i] in seen:
            continue
        seen.add(texts[i])
        item = {"text": texts[i], "distance": round(float(novelty[i]), 4)}
        if ref_texts is not None:
            item["nearest_reference"] = ref_texts[int(nearest[i])]
        farthest.append(item)
        if len(farthest) >= examples:
            break
    novel = np.flatnonzero(novelty > cutoff)
    return {"novelty_cutoff": round(cutoff, 4), "novel_share": round(len(novel) / max(1, len(texts)), 4),
            "farthest": farthest, "clusters": _clusters(current, novel, texts, examples)}


def _clusters(current: np.ndarray, novel: np.ndarray, texts: list[str], examples: int) -> list[dict]:
    if len(novel) < 3:
        return []
    from sklearn.cluster import AgglomerativeClustering
    vecs = current[novel]
    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=0.6, metric="cosine",
                                     linkage="average").fit_predict(vecs)
    out = []
    min_size = max(3, math.ceil(0.01 * len(current)))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < min_size:
            continue
        centre = vecs[members].mean(axis=0)
        order = members[np.argsort(-(vecs[members] @ centre))]
        shown, seen = [], set()
        for j in order:
            t = texts[novel[j]]
            if t not in seen:
                seen.add(t)
                shown.append(t)
            if len(shown) >= min(5, examples):
                break
        out.append({"size": int(len(members)), "share": round(len(members) / len(current), 4), "examples": shown})
    return sorted(out, key=lambda c: -c["size"])


# -- Evidently report -------------------------------------------------------------
def report(reference: dict[str, np.ndarray], current: dict[str, np.ndarray], ref_numeric: pd.DataFrame,
           cur_numeric: pd.DataFrame, quantile: float) -> tuple[object | None, dict[str, str]]:
    """An Evidently snapshot: embedding drift per side (domain classifier, as in compare()) and value
    drift of the numeric columns, with what could not be drawn left out.

    ``reference``/``current`` map side -> vectors for the same rows as the numeric frames (a side
    whose vectors cover fewer rows, because some requests have no text there, is left out).
    Returns (snapshot or None, {part: why it was left out}), parts named ``embeddings:<side>`` and
    ``value_drift:<column>``. A side whose picture cannot be drawn (fewer than
    PICTURE_MIN_DISTINCT distinct vectors in a sample) is left out before running; when the report
    still fails (to compute or to render), each part is tried alone and the report is drawn again
    from those that work.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift import embeddings_drift
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    embeddings_drift.SAMPLE_CONSTANT = TSNE_SAMPLE
    embeddings_drift.TSNE = _PlanePicture
    _faster_evidently()
    omitted: dict[str, str] = {}
    sides = []
    for s in SIDES:
        if s not in reference or s not in current:
            continue
        if len(reference[s]) != len(ref_numeric) or len(current[s]) != len(cur_numeric):
            omitted[f"embeddings:{s}"] = (f"{len(ref_numeric) - len(reference[s])} reference and "
                                          f"{len(cur_numeric) - len(current[s])} current requests have no {s} "
                                          "text, and the report needs one vector per request")
            continue
        few = {k: distinct(v[s]) for k, v in (("reference", reference), ("current", current))}
        if min(few.values()) < PICTURE_MIN_DISTINCT:
            omitted[f"embeddings:{s}"] = (f"the picture is a density of each sample's 2-D projection and needs "
                                          f"{PICTURE_MIN_DISTINCT} distinct vectors per sample; the reference has "
                                          f"{few['reference']}, the current {few['current']} (the same text "
                                          "throughout)")
            continue
        sides.append(s)

    def frame(vecs: dict[str, np.ndarray], numeric: pd.DataFrame) -> pd.DataFrame:
        parts = [numeric.reset_index(drop=True)[list(NUMERIC_COLUMNS)].astype("float64")]
        parts += [_frame(vecs[s], f"emb_{s}_") for s in sides]
        return pd.concat(parts, axis=1)

    ref_df, cur_df = frame(reference, ref_numeric), frame(current, cur_numeric)
    definition = DataDefinition(numerical_columns=list(NUMERIC_COLUMNS),
                                embeddings={s: [c for c in ref_df.columns if c.startswith(f"emb_{s}_")] for s in sides})
    parts = {f"embeddings:{s}": (lambda s=s: EmbeddingsDrift(embeddings_name=s, drift_method=ModelDriftMethod(
        bootstrap=True, quantile_probability=quantile))) for s in sides}
    parts.update({f"value_drift:{c}": (lambda c=c: ValueDrift(column=c)) for c in NUMERIC_COLUMNS})

    def run(names):
        snapshot = Report([parts[n]() for n in names]).run(Dataset.from_pandas(cur_df, data_definition=definition),
                                                          Dataset.from_pandas(ref_df, data_definition=definition))
        snapshot.get_html_str(as_iframe=False)  # drawn means the page renders too (about 50 ms)
        return snapshot

    try:
        return run(list(parts)), omitted
    except Exception as exc:  # find the parts that fail and draw the rest
        whole = _reason(exc)
    drawable = []
    for name in parts:
        try:
            run([name])
        except Exception as exc:
            omitted[name] = _reason(exc)
        else:
            drawable.append(name)
    if drawable and len(drawable) < len(parts):
        try:
            return run(drawable), omitted
        except Exception as exc:
            whole = _reason(exc)
    omitted["report"] = whole
    return None, omitted


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def numeric_drift(snapshot) -> dict[str, dict]:
    """Per numeric column: Evidently's method, threshold, value and whether it drifted."""
    out = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("ValueDrift"):
            name = m["metric_name"]  # ValueDrift(column=latency_ms,method=K-S p_value,threshold=0.05)
            parts = dict(p.split("=", 1) for p in name[name.index("(") + 1:-1].split(","))
            value, threshold = float(m["value"]), float(parts.get("threshold", "nan"))
            p_value = "p_value" in parts.get("method", "")
            out[cfg["column"]] = {"method": parts.get("method", ""), "threshold": threshold, "value": value,
                                  "drifted": bool(value < threshold if p_value else value >= threshold)}
    return out


def embedding_scores(snapshot) -> dict[str, float]:
    """The embedding drift score per side as Evidently computed it in the report."""
    out = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith("EmbeddingsDrift"):
            out[cfg["embeddings_name"]] = float(m["value"])
    return out


__all__ = ["compare", "preconditions", "explain", "report", "numeric_drift", "embedding_scores", "Comparison",
           "MethodResult", "METHODS"]


# -- the language mix of the inputs ------------------------------------------------------------------------
MIX_ALPHA = 0.01        # the chi-square test's level: one window of many, so a strict one
MIX_MIN_SHIFT = 0.05    # total variation distance: at least 5 points of traffic moved between languages
MIX_MIN_EXPECTED = 5    # languages expected fewer times than this in either window are pooled as "other"


def language_mix(reference: dict[str, int], current: dict[str, int]) -> dict:
    """Whether the share of inputs per language moved between two windows: the shares, the chi-square test of
    homogeneity on the 2 x languages table (languages too rare for it pooled), and the total variation distance
    (half the sum of the share differences: the share of traffic that moved). ``shifted`` needs both a
    significant test and a shift that matters; ``reason`` says why it could not be judged."""
    ref_n, cur_n = sum(reference.values()), sum(current.values())
    out = {"reference": {k: v / ref_n for k, v in sorted(reference.items())} if ref_n else {},
           "current": {k: v / cur_n for k, v in sorted(current.items())} if cur_n else {},
           "samples": {"reference": ref_n, "current": cur_n}, "shifted": False}
    languages = sorted(set(reference) | set(current))
    if not ref_n or not cur_n:
        return {**out, "reason": "no requests with a language in one of the windows"}
    total = ref_n + cur_n
    kept, other = [], [0, 0]
    for lang in languages:
        r, c = reference.get(lang, 0), current.get(lang, 0)
        if min((r + c) * ref_n / total, (r + c) * cur_n / total) < MIX_MIN_EXPECTED:
            other[0] += r
            other[1] += c
        else:
            kept.append([r, c])
    if min(sum(other) * ref_n / total, sum(other) * cur_n / total) >= MIX_MIN_EXPECTED:
        kept.append(other)  # still too rare when pooled: left out of the test (the shares still show them)
    tvd = 0.5 * sum(abs(out["current"].get(k, 0.0) - out["reference"].get(k, 0.0)) for k in languages)
    out["total_variation"] = tvd
    if len(kept) < 2:
        return {**out, "reason": "one language only (or too few requests of the others to test)"}
    from scipy.stats import chi2_contingency
    p = float(chi2_contingency(np.array(kept).T).pvalue)
    out["p_value"] = p
    out["shifted"] = p < MIX_ALPHA and tvd >= MIX_MIN_SHIFT
    return out
