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
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

METHODS = ("domain_classifier", "mmd", "centroid_cosine")
NUMERIC_COLUMNS = ("latency_ms", "input_tokens", "output_tokens", "cost_usd")
SIDES = ("input", "output")
# Evidently's embedding widget draws a 2-D picture of up to 2,500 points per side.
TSNE_SAMPLE = 500


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
    score: float
    detected: bool


@dataclass
class Comparison:
    methods: dict[str, MethodResult]
    min_methods: int

    @property
    def votes(self) -> int:
        return sum(r.detected for r in self.methods.values())

    @property
    def detected(self) -> bool:
        return self.votes >= self.min_methods

    @property
    def score(self) -> float:
        """Share of the methods that detect drift (0, 1/3, 2/3, 1)."""
        return self.votes / len(self.methods)

    def as_dict(self) -> dict:
        return {"detected": self.detected, "score": self.score, "min_methods": self.min_methods,
                "methods": {k: asdict(v) for k, v in self.methods.items()}}


def _methods(quantile: float) -> dict:
    from evidently.metrics.embeddings import DistanceDriftMethod, MMDDriftMethod, ModelDriftMethod
    return {"domain_classifier": ModelDriftMethod(bootstrap=True, quantile_probability=quantile),
            "mmd": MMDDriftMethod(bootstrap=True, quantile_probability=quantile),
            "centroid_cosine": DistanceDriftMethod(dist="cosine", bootstrap=True, quantile_probability=quantile)}


def _frame(vectors: np.ndarray, prefix: str = "e") -> pd.DataFrame:
    return pd.DataFrame(np.asarray(vectors, dtype=np.float64), columns=[f"{prefix}{i}" for i in range(vectors.shape[1])])


def compare(reference: np.ndarray, current: np.ndarray, quantile: float = 0.95, min_methods: int = 2) -> Comparison:
    """Run the three methods on (reference, current) vectors and combine their votes."""
    if reference.shape[1] != current.shape[1]:
        raise ValueError(f"reference vectors have {reference.shape[1]} dimensions, current {current.shape[1]}")
    out = {}
    for name, method in _methods(quantile).items():
        score, detected, _ = method(_frame(current), _frame(reference))
        out[name] = MethodResult(float(score), bool(detected))
    return Comparison(out, min_methods)


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
           cur_numeric: pd.DataFrame, quantile: float):
    """An Evidently snapshot: embedding drift per side (domain classifier, as in compare()) and
    value drift of the numeric columns. ``reference``/``current`` map side -> vectors for the same rows
    as the numeric frames."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift import embeddings_drift
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    embeddings_drift.SAMPLE_CONSTANT = TSNE_SAMPLE
    embeddings_drift.TSNE = _PlanePicture
    sides = [s for s in SIDES if s in reference and s in current]

    def frame(vecs: dict[str, np.ndarray], numeric: pd.DataFrame) -> pd.DataFrame:
        parts = [numeric.reset_index(drop=True)[list(NUMERIC_COLUMNS)].astype("float64")]
        parts += [_frame(vecs[s], f"emb_{s}_") for s in sides]
        return pd.concat(parts, axis=1)

    ref_df, cur_df = frame(reference, ref_numeric), frame(current, cur_numeric)
    definition = DataDefinition(numerical_columns=list(NUMERIC_COLUMNS),
                                embeddings={s: [c for c in ref_df.columns if c.startswith(f"emb_{s}_")] for s in sides})
    metrics = [EmbeddingsDrift(embeddings_name=s, drift_method=ModelDriftMethod(bootstrap=True,
                                                                                quantile_probability=quantile))
               for s in sides]
    metrics += [ValueDrift(column=c) for c in NUMERIC_COLUMNS]
    return Report(metrics).run(Dataset.from_pandas(cur_df, data_definition=definition),
                               Dataset.from_pandas(ref_df, data_definition=definition))


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


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, default=_jsonable)


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.bool_):
        return bool(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


__all__ = ["compare", "explain", "report", "numeric_drift", "embedding_scores", "Comparison", "METHODS"]
