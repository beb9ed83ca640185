"""API keys: created once, stored as a hash, checked on every request with a scope.

A key looks like ``nlpm_<key_id>_<secret>``. The id finds the row; only the
SHA-256 of the secret is stored. The secret has 192 bits of entropy, so a fast
hash is enough (a slow KDF guards low-entropy passwords, which these are not).
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import logging
import re
import secrets
import threading
from dataclasses import dataclass

from flask import current_app, g, request

from monitor.foundation.http import ApiError
from monitor.foundation.storage import Store
from monitor.foundation.tables import api_keys

SCOPES = ("ingest", "read", "review", "admin")
KEY_PATTERN = re.compile(r"nlpm_[0-9a-f]{12}_[A-Za-z0-9_\-]{20,}")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    def allows(self, scope: str) -> bool:
        # admin may do everything; the other scopes are independent of each other.
        return self.revoked_at is None and (scope in self.scopes or "admin" in self.scopes)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(key: str) -> tuple[str, str] | None:
    if not KEY_PATTERN.fullmatch(key):
        return None
    _, key_id, secret = key.split("_", 2)
    return key_id, secret


class KeyStore:
    def __init__(self, store: Store, clock, cache_seconds: float = 10.0):
        self.store = store
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[dt.datetime, ApiKey | None, str]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)} (got {', '.join(bad) or 'none'})")
        if not name.strip():
            raise ValueError("name must not be empty")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        now = self.clock.now()
        api_keys.insert(self.store, key_id, name, sorted(set(scopes)), _hash(secret), now, None, _version(now))
        return ApiKey(key_id, name, tuple(sorted(set(scopes))), now, None), f"nlpm_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        return [ApiKey(r.key_id, r.name, tuple(r.scopes), r.created_at, r.revoked_at) for r in api_keys.list_all(self.store)]

    def revoke(self, key_id: str) -> bool:
        row = api_keys.get(self.store, key_id)
        if row is None:
            return False
        now = self.clock.now()
        api_keys.insert(self.store, key_id, row.name, row.scopes, row.key_hash, row.created_at, row.revoked_at or now,
                        _version(now))
        with self._lock:
            self._cache.pop(key_id, None)
        return True

    def authenticate(self, key: str) -> ApiKey | None:
        parts = _split(key)
        if parts is None:
            return None
        key_id, secret = parts
        api_key, key_hash = self._lookup(key_id)
        if api_key is None or not hmac.compare_digest(key_hash, _hash(secret)):
            return None
        return api_key

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id as the store has it (cached like authenticate), for signed-in sessions."""
        return self._lookup(key_id)[0]

    def _lookup(self, key_id: str) -> tuple[ApiKey | None, str]:
        now = self.clock.now()
        with self._lock:
            hit = self._cache.get(key_id)
        if hit is None or (now - hit[0]).total_seconds() > self.cache_seconds:
            row = api_keys.get(self.store, key_id)
            api_key, key_hash = None, ""
            if row is not None:
                key_hash = row.key_hash
                api_key = ApiKey(key_id, row.name, tuple(row.scopes), row.created_at, row.revoked_at)
            hit = (now, api_key, key_hash)
            with self._lock:
                self._cache[key_id] = hit
        return hit[1], hit[2]


def _version(now: dt.datetime) -> int:
    return int(now.timestamp() * 1_000_000)


def session_key() -> ApiKey | None:
    """The key a dashboard session was signed in with, while the session is valid and the key not revoked."""
    from flask import session
    key_id, expires = session.get("key_id"), session.get("expires", 0)
    if not key_id or expires < current_app.extensions["nlpmon"].clock.now().timestamp():
        return None
    api_key = current_app.extensions["nlpmon"].keys.get(key_id)
    return api_key if api_key is not None and api_key.revoked_at is None else None


def bearer_key(keys: KeyStore, authorization: str, scope: str) -> ApiKey:
    """The key that an ``Authorization`` value (``Bearer <key>``: the HTTP header, or the ``authorization``
    metadata of an OTLP/gRPC call) names, when it holds ``scope``: one check for every front door.
    ApiError 401 without a valid key, 403 without the scope."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'",
                       {"WWW-Authenticate": 'Bearer realm="nlpmon"'})
    api_key = keys.authenticate(key.strip())
    if api_key is None or api_key.revoked_at is not None:
        raise ApiError(401, "unauthorized", "invalid or revoked API key",
                       {"WWW-Authenticate": 'Bearer realm="nlpmon", error="invalid_token"'})
    if not api_key.allows(scope):
        raise ApiError(403, "forbidden", f"this API key lacks the '{scope}' scope")
    return api_key


def require(scope: str):
    """View decorator: 401 without a valid key, 403 when the key lacks ``scope``.

    A signed-in dashboard session counts as the key for reads (GET/HEAD) only,
    so pages can fetch JSON and embed reports; changes always need the header
    (or a dashboard form with its CSRF token), so a cookie alone cannot change anything.
    """
    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            if not header and request.method in ("GET", "HEAD"):
                api_key = session_key()
                if api_key is not None:
                    if not api_key.allows(scope):
                        raise ApiError(403, "forbidden", f"this API key lacks the '{scope}' scope")
                    g.api_key = api_key
                    return view(*args, **kwargs)
            g.api_key = bearer_key(current_app.extensions["nlpmon"].keys, header, scope)
            return view(*args, **kwargs)
        inner.required_scope = scope
        return inner
    return wrap


class KeyMaskingFilter(logging.Filter):
    """Belt and braces: no log line ever carries an API key, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "nlpm_" in msg:
            record.msg = KEY_PATTERN.sub("nlpm_***", msg)
            record.args = None
        return True
