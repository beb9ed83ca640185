"""``instance_settings``: values generated once per installation (the user-id salt, the session secret)."""
from __future__ import annotations

import secrets


def get_or_create(store, key: str) -> str:
    """The setting's value, generated (64 random hex characters) on first use.

    Two processes racing both insert; both then read the smallest value, so they agree.
    """
    query = "SELECT min(value) FROM instance_settings WHERE key = {key:String}"
    found = store.scalar(query, {"key": key})
    if not found:
        store.insert("instance_settings", [[key, secrets.token_hex(32), 0]], ["key", "value", "version"])
        found = store.scalar(query, {"key": key})
    return found


def get(store, key: str) -> str | None:
    """The newest value of a setting written with put(), or None."""
    rows = store.query("SELECT argMax(value, version), count() FROM instance_settings WHERE key = {key:String}",
                       {"key": key})
    return rows[0][0] if rows and rows[0][1] else None


def put(store, key: str, value: str, version: int) -> None:
    """Set a setting that changes (a larger ``version`` wins, e.g. epoch milliseconds)."""
    store.insert("instance_settings", [[key, value, version]], ["key", "value", "version"])
