"""``api_keys``: hashed keys with their scopes; a revocation is a newer version of the row."""
from __future__ import annotations

COLUMNS = ["key_id", "name", "scopes", "key_hash", "created_at", "revoked_at", "version"]


def insert(store, key_id: str, name: str, scopes: list[str], key_hash: str, created_at, revoked_at, version: int):
    store.insert("api_keys", [[key_id, name, scopes, key_hash, created_at, revoked_at, version]], COLUMNS)


def list_all(store) -> list[tuple]:
    """(key_id, name, scopes, created_at, revoked_at) of every key, oldest first."""
    return store.query("SELECT key_id, name, scopes, created_at, revoked_at FROM api_keys FINAL ORDER BY created_at")


def get(store, key_id: str) -> tuple | None:
    """(name, scopes, key_hash, created_at, revoked_at) of one key, or None."""
    rows = store.query("SELECT name, scopes, key_hash, created_at, revoked_at FROM api_keys FINAL "
                       "WHERE key_id = {id:String}", {"id": key_id})
    return rows[0] if rows else None
