"""``embedding_cache``: sentence vectors by (model id, text hash), so no text is encoded twice."""
from __future__ import annotations

import datetime as dt

COLUMNS = ["model", "text_hash", "vector", "created_at"]
LOOKUP_CHUNK = 2000


def lookup(store, model: str, hashes: list[str]) -> dict[str, list[float]]:
    """text hash -> vector, for the hashes the cache holds under this model."""
    out: dict[str, list[float]] = {}
    for i in range(0, len(hashes), LOOKUP_CHUNK):
        for h, v in store.query("SELECT text_hash, any(vector) FROM embedding_cache WHERE model = {m:String} "
                                "AND text_hash IN {h:Array(String)} GROUP BY text_hash",
                                {"m": model, "h": hashes[i:i + LOOKUP_CHUNK]}):
            out[h] = v
    return out


def insert(store, model: str, vectors: dict[str, list[float]], now: dt.datetime) -> None:
    if vectors:
        store.insert("embedding_cache", [[model, h, v, now] for h, v in vectors.items()], COLUMNS)
