"""Health checks and a store that cannot be reached at all (a real refused connection)."""
from __future__ import annotations

from monitor.app import create_app
from monitor.foundation.config import load_config
from monitor.foundation.storage import Store, StoreUnavailable
from tests.helpers import auth, free_port, request_event


def unreachable_app(clock):
    cfg = load_config(env={}, overrides={"clickhouse": {"url": f"http://default:@127.0.0.1:{free_port()}/nlpmon",
                                                        "connect_timeout_seconds": 1}})
    return create_app(cfg, Store.from_config(cfg), clock)


def test_readyz_reports_an_unreachable_store(clock):
    c = unreachable_app(clock).test_client()
    assert c.get("/healthz").status_code == 200
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json["status"] == "unavailable" and r.headers["Retry-After"]
    assert "ClickHouse at 127.0.0.1" in r.json["store"]


def test_requests_needing_the_store_get_503_not_500(clock):
    c = unreachable_app(clock).test_client()
    # Even the key check needs the store: the answer is "retry later", not "unauthorized".
    r = c.post("/v1/requests", json=[request_event(1)], headers=auth("nlpm_0123456789ab_" + "x" * 32))
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json["error"] == "store_unavailable" and "Traceback" not in r.get_data(as_text=True)


def test_store_error_names_the_server():
    s = Store(f"http://127.0.0.1:{free_port()}", "nlpmon", connect_timeout=1)
    try:
        s.scalar("SELECT 1")
    except StoreUnavailable as exc:
        assert "unreachable" in str(exc) and "127.0.0.1" in str(exc)
    else:
        raise AssertionError("expected StoreUnavailable")
