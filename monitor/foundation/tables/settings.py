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
