"""At ingest: PII redaction, salted user id hashes, and cost from the price table."""
from __future__ import annotations

import datetime as dt

import pytest

from monitor.foundation.config import Price
from monitor.ingest.pricing import PriceTable
from monitor.ingest.redact import Redactor, luhn_ok
from tests.helpers import auth, request_event


@pytest.mark.parametrize("text, expected", [
    ("write to jane.doe+billing@example.co.uk today", "write to [EMAIL] today"),
    ("call me on +1 415-555-0132", "call me on [PHONE]"),
    ("my number is (415) 555-0132.", "my number is [PHONE]."),
    ("Tel. 030 1234 5678", "Tel. [PHONE]"),
    ("card 4111 1111 1111 1111 expires soon", "card [CARD] expires soon"),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("amex 378282246310005", "amex [CARD]"),
    ("from 203.0.113.7 via 2001:db8::8a2e:370:7334", "from [IP] via [IP]"),
    ("The card I used was 4111 1111 1111 1111.", "The card I used was [CARD]."),
    ("It came from 203.0.113.7.", "It came from [IP]."),
])
def test_redacts_each_kind(text, expected):
    assert Redactor().redact(text) == (expected, True)


@pytest.mark.parametrize("text", [
    "order 12345 shipped on 2026-11-24 at 10:30:15",
    "the answer is 42 and pi is 3.14159",
    "tracking 4111 1111 1111 1112 is not a card",  # fails Luhn, too long for a phone
    "999.999.999.999 is not an address",
    "nothing to see here",
])
def test_leaves_ordinary_text_alone(text):
    assert Redactor().redact(text) == (text, False)


def test_redaction_kinds_are_configurable():
    only_email = Redactor(["email"])
    assert only_email.redact("a@b.io or 203.0.113.7") == ("[EMAIL] or 203.0.113.7", True)


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_ingest_redacts_text_and_hashes_user(client, keys, store):
    ev = request_event(1, input_text="I am jane@example.com, card 4111 1111 1111 1111",
                       output_text="We will call +44 20 7946 0958", context_text="ip 198.51.100.23",
                       user_id="user-42")
    assert client.post("/v1/requests", json=[ev, request_event(2, user_id="user-42")],
                       headers=auth(keys["ingest"])).status_code == 200
    row = store.query_dicts("SELECT * FROM requests WHERE request_id = 'req-1'")[0]
    assert row["input_text"] == "I am [EMAIL], card [CARD]"
    assert row["output_text"] == "We will call [PHONE]"
    assert row["context_text"] == "ip [IP]"
    assert row["pii_detected"] is True
    assert "user-42" not in str(store.query("SELECT * FROM requests"))
    hashes = store.query("SELECT DISTINCT user_id_hash FROM requests")
    assert len(hashes) == 1 and len(hashes[0][0]) == 32
    clean = store.query_dicts("SELECT pii_detected FROM requests WHERE request_id = 'req-2'")[0]
    assert clean["pii_detected"] is False


def test_rejected_raw_rows_are_redacted_too(client, keys, store):
    ev = request_event(1, input_text="reach me at jane@example.com", status="broken")
    client.post("/v1/requests", json=[ev], headers=auth(keys["ingest"]))
    raw = store.scalar("SELECT raw FROM rejected_events")
    assert "jane@example.com" not in raw and "[EMAIL]" in raw


def test_redaction_can_be_switched_off(make_config, clock, make_store):
    from monitor.app import create_app
    cfg = make_config(privacy={"redact_pii": False, "user_id_salt": "pepper-for-tests"})
    store = make_store(cfg)
    app = create_app(cfg, store, clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    app.test_client().post("/v1/requests", json=[request_event(1, input_text="jane@example.com", user_id="u")],
                           headers=auth(key))
    text, pii, uid = store.query("SELECT input_text, pii_detected, user_id_hash FROM requests")[0]
    assert (text, pii) == ("jane@example.com", False)
    import hashlib
    import hmac
    assert uid == hmac.new(b"pepper-for-tests", b"u", hashlib.sha256).hexdigest()[:32]


def test_generated_salt_is_stable_across_restarts(config, store, clock):
    from monitor.ingest.pipeline import user_id_salt
    first = user_id_salt(store, config, clock)
    assert len(first) == 64 and user_id_salt(store, config, clock) == first


def test_price_table_uses_the_price_in_force():
    table = PriceTable([
        Price(model="m", effective_from=dt.date(2026, 1, 1), input_per_mtok=2.0, output_per_mtok=8.0,
              cached_input_per_mtok=0.5),
        Price(model="m", effective_from=dt.date(2026, 6, 1), input_per_mtok=1.0, output_per_mtok=4.0),
    ])
    # 1000 in (200 cached), 500 out, January prices: 800*2 + 200*0.5 + 500*8 = 5700 per million.
    assert table.cost("m", dt.date(2026, 3, 1), 1000, 500, 200) == pytest.approx(0.0057)
    # From June the cached price falls back to the input price: 1000*1 + 500*4 = 3000.
    assert table.cost("m", dt.date(2026, 7, 1), 1000, 500, 200) == pytest.approx(0.003)
    assert table.cost("m", dt.date(2025, 12, 31), 1000, 500) is None
    assert table.cost("other", dt.date(2026, 3, 1), 1000, 500) is None


def test_ingest_prices_events_without_cost(make_config, clock, make_store):
    from monitor.app import create_app
    cfg = make_config(pricing=[{"model": "gpt-4o-mini", "effective_from": "2026-01-01", "input_per_mtok": 0.15,
                                "output_per_mtok": 0.60, "cached_input_per_mtok": 0.075}])
    store = make_store(cfg)
    app = create_app(cfg, store, clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    rows = [request_event(1, input_tokens=10_000, cached_input_tokens=4_000, output_tokens=1_000),
            request_event(2, cost_usd=0.5),
            request_event(3, model="mystery-model")]
    assert app.test_client().post("/v1/requests", json=rows, headers=auth(key)).status_code == 200
    got = {r[0]: (r[1], r[2]) for r in store.query("SELECT request_id, cost_usd, cost_source FROM requests")}
    assert got["req-1"][0] == pytest.approx((6000 * 0.15 + 4000 * 0.075 + 1000 * 0.60) / 1e6)
    assert got["req-1"][1] == "price_table"
    assert got["req-2"] == (0.5, "event")
    assert got["req-3"] == (0.0, "unpriced")
