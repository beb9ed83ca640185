"""API keys: the 401/403 matrix, hashing at rest, revocation and keeping keys out of logs."""
from __future__ import annotations

import logging

import pytest

from monitor.foundation.auth import KeyStore
from tests.helpers import auth, request_event

# (method, path, required scope). Health checks are the only open endpoints.
ENDPOINTS = [
    ("post", "/v1/requests", "ingest"),
    ("post", "/v1/feedback", "ingest"),
    ("get", "/v1/requests/req-1", "read"),
    ("get", "/v1/rejected", "read"),
]


def call(client, method, path, headers):
    kw = {"headers": headers}
    if method == "post":
        kw["json"] = [request_event(1)] if path.endswith("requests") else [
            {"request_id": "req-1", "ts": "2026-11-24T09:31:00Z", "kind": "thumbs", "value": 1}]
    return getattr(client, method)(path, **kw)


@pytest.mark.parametrize("method, path, scope", ENDPOINTS)
def test_access_matrix(client, keys, method, path, scope):
    assert call(client, method, path, {}).status_code == 401
    assert call(client, method, path, {"Authorization": "Bearer nope"}).status_code == 401
    assert call(client, method, path, {"Authorization": "Basic abc"}).status_code == 401
    assert call(client, method, path, auth(keys["revoked"])).status_code == 401
    for held in ("ingest", "read"):
        r = call(client, method, path, auth(keys[held]))
        if held == scope:
            assert r.status_code in (200, 207, 404), r.json
        else:
            assert r.status_code == 403 and scope in r.json["message"]
    assert call(client, method, path, auth(keys["admin"])).status_code in (200, 207, 404)


def test_unauthorized_answer_is_json_with_challenge(client):
    r = client.post("/v1/requests", json=[])
    assert r.status_code == 401 and r.json["error"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_health_checks_need_no_key(client):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_keys_are_stored_hashed(app, store):
    key, plain = app.extensions["nlpmon"].keys.create("ci", ["read"])
    secret = plain.split("_", 2)[2]  # the key id holds no "_"; the secret may
    dump = str(store.query("SELECT * FROM api_keys"))
    assert secret not in dump and plain not in dump
    assert key.key_id in dump


def test_revocation_takes_effect_after_cache_window(store, clock):
    ks = KeyStore(store, clock, cache_seconds=10)
    key, plain = ks.create("svc", ["ingest"])
    assert ks.authenticate(plain) is not None
    # Another process revokes it: this one notices when its cache entry expires.
    KeyStore(store, clock, cache_seconds=0).revoke(key.key_id)
    assert ks.authenticate(plain).revoked_at is None
    clock.advance(11)
    assert ks.authenticate(plain).revoked_at is not None


def test_wrong_secret_for_existing_id_is_refused(app):
    ks = app.extensions["nlpmon"].keys
    _, plain = ks.create("svc", ["ingest"])
    forged = plain[:-4] + ("AAAA" if not plain.endswith("AAAA") else "BBBB")
    assert ks.authenticate(forged) is None


def test_unknown_scope_is_refused(app):
    with pytest.raises(ValueError, match="scope must be one of"):
        app.extensions["nlpmon"].keys.create("x", ["write"])


def test_keys_never_reach_logs(client, keys, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("monitor.test").warning("client sent %s", keys["ingest"])
    for k in keys.values():
        client.post("/v1/requests", json=[request_event(1)], headers=auth(k))
        client.get("/v1/rejected", headers=auth(k))
    text = caplog.text + " ".join(r.getMessage() for r in caplog.records)
    assert "client sent nlpm_***" in text
    for k in keys.values():
        assert k not in text
