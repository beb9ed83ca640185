"""What the raw event tables (``requests``, ``feedback``) share: finding rows by id through the
skip index on the id's halfMD5, and the lock that orders writes to them in this process.

Ids travel to the store as 64-bit hashes (binding a thousand strings costs more than the query);
the exact ids that come back are compared, so a hash collision never drops an event.
"""
from __future__ import annotations

import hashlib
import threading
from typing import Iterable

# Held by ingest from its duplicate check to its insert (two senders of one id in this process
# cannot both pass the check), and by the rollup reconciliation while it re-checks and repairs
# a bucket (no insert of this process is half-way through its materialized views then).
RAW_WRITES = threading.RLock()


def deduplicated(token: str | None) -> dict | None:
    """Insert settings under which ClickHouse keeps one block per ``token``, in the raw table and (the
    views' blocks inherit it) in every rollup: two processes inserting the same batch at once, after
    both found its ids absent, store it once. Within the table's de-duplication window (see 0009)."""
    if not token:
        return None
    return {"insert_deduplication_token": token, "deduplicate_blocks_in_dependent_materialized_views": 1}


def half_md5(text: str) -> int:
    """ClickHouse's halfMD5: the first 8 bytes of the MD5 digest, big-endian."""
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big")


def stored_ids(store, table: str, id_col: str, ids: Iterable[str]) -> set[str]:
    """The ids among ``ids`` that ``table`` already holds, whatever their time: an id is the
    idempotency key on its own (a replay may carry another ts, in another partition)."""
    ids = set(ids)
    if not ids:
        return set()
    found = store.query(
        f"SELECT {id_col} FROM {table} WHERE halfMD5({id_col}) IN {{hashes:Array(UInt64)}}",
        {"hashes": [half_md5(i) for i in ids]})
    return {r[0] for r in found} & ids
