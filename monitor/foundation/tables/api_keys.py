"""``api_keys``: hashed keys with their scopes; a revocation is a newer version of the row."""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple

COLUMNS = ["key_id", "name", "scopes", "key_hash", "created_at", "revoked_at", "version"]


def insert(store, key_id: str, name: str, scopes: list[str], key_hash: str, created_at, revoked_at, version: int):
    store.insert("api_keys", [[key_id, name, scopes, key_hash, created_at, revoked_at, version]], COLUMNS)


class KeyRow(NamedTuple):
    """A key as stored: its secret only as a hash."""

    key_id: str
    name: str
    scopes: list[str]
    key_hash: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


_KEY = "SELECT key_id, name, scopes, key_hash, created_at, revoked_at FROM api_keys FINAL"


def list_all(store) -> list[KeyRow]:
    """Every key, oldest first."""
    return [KeyRow(*r) for r in store.query(_KEY + " ORDER BY created_at")]


def get(store, key_id: str) -> KeyRow | None:
    rows = store.query(_KEY + " WHERE key_id = {id:String}", {"id": key_id})
    return KeyRow(*rows[0]) if rows else None
