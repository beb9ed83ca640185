"""What the raw event tables (``requests``, ``feedback``) share: finding rows by id through the
skip index on the id's halfMD5.

Ids travel to the store as 64-bit hashes (binding a thousand strings costs more than the query);
the exact ids that come back are compared, so a hash collision never drops an event.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Iterable


def half_md5(text: str) -> int:
    """ClickHouse's halfMD5: the first 8 bytes of the MD5 digest, big-endian."""
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big")


def stored_ids(store, table: str, id_col: str, ids: Iterable[str], lo: dt.datetime, hi: dt.datetime) -> set[str]:
    """The ids among ``ids`` that ``table`` already holds with a ts in [lo, hi]."""
    ids = set(ids)
    if not ids:
        return set()
    found = store.query(
        f"SELECT {id_col} FROM {table} WHERE ts >= {{lo:DateTime64(3, 'UTC')}} AND ts <= {{hi:DateTime64(3, 'UTC')}} "
        f"AND halfMD5({id_col}) IN {{hashes:Array(UInt64)}}",
        {"lo": lo, "hi": hi, "hashes": [half_md5(i) for i in ids]})
    return {r[0] for r in found} & ids
