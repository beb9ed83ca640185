"""POST /v1/requests and /v1/feedback: validation, rejected rows, idempotency, body handling."""
from __future__ import annotations

import gzip
import json
import zlib

import pytest

from tests.helpers import auth, feedback_event, request_event


def post(client, key, rows, path="/v1/requests", **kw):
    return client.post(path, json=rows, headers=auth(key), **kw)


def stored(store, table="requests"):
    return store.scalar(f"SELECT count() FROM {table}")


def test_valid_batch_lands_with_defaults(client, keys, store):
    r = post(client, keys["ingest"], [request_event(1), request_event(2, ttft_ms=None)])
    assert r.status_code == 200
    assert r.json == {"accepted": 2, "duplicates": 0, "rejected": 0, "errors": []}
    row = store.query_dicts("SELECT * FROM requests WHERE request_id = 'req-2'")[0]
    assert row["ttft_ms"] is None
    assert row["environment"] == "production"
    assert row["tags"] == {} and row["cache_hit"] is False and row["text_truncated"] is False


@pytest.mark.parametrize("over, field, reason", [
    ({"latency_ms": -5}, "latency_ms", "must not be negative"),
    ({"latency_ms": "fast"}, "latency_ms", "must be a number"),
    ({"latency_ms": True}, "latency_ms", "must be a number"),
    ({"status": "exploded"}, "status", "unknown value 'exploded'"),
    ({"input_tokens": 1.5}, "input_tokens", "must be an integer"),
    ({"input_tokens": -1}, "input_tokens", "must not be negative"),
    ({"ts": "2026-11-24T11:00:00Z"}, "ts", "in the future"),
    ({"ts": "yesterday"}, "ts", "ISO 8601"),
    ({"ts": "2020-01-01T00:00:00Z"}, "ts", "older than the retention"),
    ({"service": ""}, "service", "must not be empty"),
    ({"service": 7}, "service", "must be a string"),
    ({"ttft_ms": 9000}, "ttft_ms", "greater than latency_ms"),
    ({"cached_input_tokens": 5000}, "cached_input_tokens", "greater than input_tokens"),
    ({"tags": ["a"]}, "tags", "must be an object"),
    ({"tags": {"k": {"nested": 1}}}, "tags", "must be a string"),
    ({"input_embedding": [0.1, "x"]}, "input_embedding", "finite numbers"),
    ({"cache_hit": "yes"}, "cache_hit", "true or false"),
    ({"latncy_ms": 5}, "latncy_ms", "unknown field"),
    ({"model": "m" * 200}, "model", "longer than 128"),
])
def test_invalid_field_is_rejected_and_named(client, keys, store, over, field, reason):
    r = post(client, keys["ingest"], [request_event("good"), request_event("bad", **over)])
    assert r.status_code == 207
    body = r.json
    assert body["accepted"] == 1 and body["rejected"] == 1
    errs = [e for e in body["errors"] if e["index"] == 1]
    assert errs[0]["field"] == field and reason in errs[0]["reason"], errs
    assert store.scalar("SELECT groupArray(request_id) FROM requests") == ["req-good"]
    kept = store.query_dicts("SELECT row_index, field, reason, raw, kind FROM rejected_events")
    assert len(kept) == 1 and kept[0]["row_index"] == 1 and kept[0]["field"] == field
    assert reason in kept[0]["reason"] and kept[0]["kind"] == "requests"
    assert json.loads(kept[0]["raw"])["request_id"] == "req-bad"


@pytest.mark.parametrize("missing", ["request_id", "ts", "service", "feature", "model", "status", "latency_ms"])
def test_missing_required_field(client, keys, missing):
    ev = request_event()
    del ev[missing]
    r = post(client, keys["ingest"], [ev])
    assert r.status_code == 207
    assert r.json["errors"][0] == {"index": 0, "field": missing, "reason": "required field is missing"}


def test_non_finite_numbers_are_rejected(client, keys, store):
    body = ('[{"request_id":"a","ts":"2026-11-24T09:00:00Z","service":"s","feature":"f","model":"m",'
            '"status":"ok","latency_ms":NaN},'
            '{"request_id":"b","ts":"2026-11-24T09:00:00Z","service":"s","feature":"f","model":"m",'
            '"status":"ok","latency_ms":1e999}]')
    r = client.post("/v1/requests", data=body, content_type="application/json", headers=auth(keys["ingest"]))
    assert r.status_code == 207
    assert [(e["index"], e["field"], e["reason"]) for e in r.json["errors"]] == [
        (0, "latency_ms", "must be a finite number"), (1, "latency_ms", "must be a finite number")]
    assert stored(store, "rejected_events") == 2


def test_lone_surrogate_rejects_only_its_row(client, keys, store):
    body = json.dumps([request_event(1), request_event(2, input_text="broken \ud800 text")])
    assert "\\ud800" in body
    for ctype in ("application/json", "application/x-ndjson"):
        data = body if ctype == "application/json" else "\n".join(json.dumps(r) for r in json.loads(body))
        r = client.post("/v1/requests", data=data, content_type=ctype, headers=auth(keys["ingest"]))
        assert r.status_code == 207
        assert r.json["accepted"] == 1 and r.json["errors"][0]["index"] == 1
        assert "surrogate" in r.json["errors"][0]["reason"]
    assert stored(store) == 1 and stored(store, "rejected_events") == 2


def test_resending_same_request_id_does_not_double_count(client, keys, store):
    batch = [request_event(i) for i in range(5)]
    assert post(client, keys["ingest"], batch).json["duplicates"] == 0
    again = post(client, keys["ingest"], batch + [request_event(2)]).json
    assert again == {"accepted": 6, "duplicates": 6, "rejected": 0, "errors": []}
    # Not only after a merge: the raw table holds each request once.
    assert stored(store) == 5
    assert store.scalar("SELECT count() FROM requests FINAL") == 5


def test_feedback_validation_and_idempotency(client, keys, store):
    rows = [feedback_event(1), feedback_event(1, kind="rating", value=4),
            feedback_event(2, kind="hallucination", label="hallucinated", source="reviewer", reviewer="ana"),
            feedback_event(3, kind="thumbs", value=3),
            feedback_event(4, kind="hallucination", label="maybe"),
            feedback_event(5, kind="mood", value=1)]
    r = post(client, keys["ingest"], rows, path="/v1/feedback")
    assert r.status_code == 207
    assert r.json["accepted"] == 3
    assert [(e["index"], e["field"]) for e in r.json["errors"]] == [(3, "value"), (4, "label"), (5, "kind")]
    again = post(client, keys["ingest"], rows[:3], path="/v1/feedback").json
    assert again["duplicates"] == 3
    assert stored(store, "feedback") == 3


def test_ndjson_with_a_broken_line_keeps_the_rest(client, keys, store):
    lines = [json.dumps(request_event(1)), "{not json", "", json.dumps(request_event(2))]
    r = client.post("/v1/requests", data="\n".join(lines), content_type="application/x-ndjson",
                    headers=auth(keys["ingest"]))
    assert r.status_code == 207
    assert r.json["accepted"] == 2 and r.json["rejected"] == 1
    assert r.json["errors"][0]["index"] == 1 and "not valid JSON" in r.json["errors"][0]["reason"]
    assert store.scalar("SELECT raw FROM rejected_events") == "{not json"


def test_gzip_body(client, keys, store):
    body = gzip.compress(json.dumps([request_event(i) for i in range(3)]).encode())
    r = client.post("/v1/requests", data=body, headers={**auth(keys["ingest"]), "Content-Encoding": "gzip",
                                                        "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json["accepted"] == 3
    assert stored(store) == 3


@pytest.mark.parametrize("data, headers, status, code", [
    ("[1,", {"Content-Type": "application/json"}, 400, "bad_request"),
    ("[]", {"Content-Type": "application/json"}, 400, "bad_request"),
    (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "bad_request"),
    ("not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400, "bad_request"),
    ("[]", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
    ("[]", {}, 415, "unsupported_media_type"),
    ("[]", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415, "unsupported_encoding"),
])
def test_bad_bodies_get_json_errors(client, keys, data, headers, status, code):
    r = client.post("/v1/requests", data=data, headers={**auth(keys["ingest"]), **headers})
    assert r.status_code == status
    assert r.is_json and r.json["error"] == code and r.json["message"]


def test_body_over_limit_is_413(make_config, clock, make_store):
    from monitor.app import create_app
    cfg = make_config(ingest={"max_body_bytes": 2000, "max_rows_per_batch": 3})
    store = make_store(cfg)
    app = create_app(cfg, store, clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    c = app.test_client()
    big = [request_event(1, input_text="x" * 3000)]
    r = c.post("/v1/requests", json=big, headers=auth(key))
    assert r.status_code == 413 and r.json["error"] == "payload_too_large"
    bomb = gzip.compress(json.dumps(big).encode())
    assert len(bomb) < 2000
    r = c.post("/v1/requests", data=bomb, headers={**auth(key), "Content-Encoding": "gzip",
                                                     "Content-Type": "application/json"})
    assert r.status_code == 413 and "decompressed" in r.json["message"]
    r = c.post("/v1/requests", json=[request_event(i) for i in range(4)], headers=auth(key))
    assert r.status_code == 413 and "4 events" in r.json["message"]


def test_long_text_is_truncated_and_flagged(make_config, clock, make_store):
    from monitor.app import create_app
    cfg = make_config(ingest={"max_text_chars": 50})
    store = make_store(cfg)
    app = create_app(cfg, store, clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    r = app.test_client().post("/v1/requests", json=[request_event(1, output_text="y" * 80)], headers=auth(key))
    assert r.status_code == 200
    text, flag = store.query("SELECT output_text, text_truncated FROM requests")[0]
    assert text == "y" * 50 and flag is True


def test_long_text_rejected_in_reject_mode(make_config, clock, make_store):
    from monitor.app import create_app
    cfg = make_config(ingest={"max_text_chars": 50, "text_over_limit": "reject"})
    store = make_store(cfg)
    app = create_app(cfg, store, clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    r = app.test_client().post("/v1/requests", json=[request_event(1, output_text="y" * 80)], headers=auth(key))
    assert r.status_code == 207
    assert r.json["errors"][0]["field"] == "output_text" and "longer than 50" in r.json["errors"][0]["reason"]


def test_lookup_returns_request_with_feedback(client, keys):
    post(client, keys["ingest"], [request_event(7)])
    post(client, keys["ingest"], [feedback_event(7, kind="task_success", value=0)], path="/v1/feedback")
    r = client.get("/v1/requests/req-7", headers=auth(keys["read"]))
    assert r.status_code == 200
    assert r.json["request"]["request_id"] == "req-7" and r.json["request"]["ts"] == "2026-11-24T09:30:00Z"
    assert [f["kind"] for f in r.json["feedback"]] == ["task_success"]
    assert client.get("/v1/requests/nope", headers=auth(keys["read"])).status_code == 404


def test_rejected_rows_are_listed(client, keys):
    post(client, keys["ingest"], [request_event(1, status="weird")])
    r = client.get("/v1/rejected?kind=requests", headers=auth(keys["read"]))
    assert r.status_code == 200 and r.json["rejected"][0]["field"] == "status"
    assert client.get("/v1/rejected?kind=bogus", headers=auth(keys["read"])).status_code == 400


# -- one bad row, one rejection, for nesting too ---------------------------------------------------
def deep_row(levels: int, request_id: str = "deep") -> str:
    """A row whose tags nest ``levels`` lists deep (the row object itself is one level more)."""
    return '{"request_id": "%s", "tags": %s"x"%s}' % (request_id, "[" * levels, "]" * levels)


def post_text(client, key, text, ctype="application/json"):
    return client.post("/v1/requests", data=text, content_type=ctype, headers=auth(key))


# 10,000: past every parser's limit (the whole body failed to parse); 1,000: orjson reads it but writing
# the rejected row back out overflowed the stack (a 500); 100: parses, and is past nlpmon's own limit.
@pytest.mark.parametrize("levels", [10_000, 1_000, 100])
def test_a_deeply_nested_row_is_rejected_alone(client, keys, store, levels):
    # Brackets, commas and escaped quotes inside strings must not split rows.
    tricky = request_event(2, input_text='a "quoted" ], {"not": [a row]}, \\ back\\slash [[[')
    body = "[" + ", ".join([json.dumps(request_event(1)), deep_row(levels), json.dumps(tricky)]) + "]"
    r = post_text(client, keys["ingest"], body)
    assert r.status_code == 207, r.data
    assert r.json["accepted"] == 2 and r.json["rejected"] == 1
    assert r.json["errors"] == [{"index": 1, "field": "_row", "reason": "nesting deeper than 64 levels"}]
    assert sorted(x[0] for x in store.query("SELECT request_id FROM requests")) == ["req-1", "req-2"]
    assert store.scalar("SELECT input_text FROM requests WHERE request_id = 'req-2'") == tricky["input_text"]
    kept = store.query_dicts("SELECT row_index, field, reason, raw FROM rejected_events")
    assert len(kept) == 1 and kept[0]["row_index"] == 1 and kept[0]["field"] == "_row"
    assert "nesting deeper than 64 levels" in kept[0]["reason"] and kept[0]["raw"].startswith('{"request_id": "deep"')


@pytest.mark.parametrize("levels", [10_000, 1_000, 100])
def test_a_deeply_nested_ndjson_line_is_rejected_alone(client, keys, store, levels):
    body = "\n".join([json.dumps(request_event(1)), deep_row(levels), json.dumps(request_event(2))]) + "\n"
    r = post_text(client, keys["ingest"], body, "application/x-ndjson")
    assert r.status_code == 207, r.data
    assert r.json["accepted"] == 2
    assert r.json["errors"] == [{"index": 1, "field": "_row", "reason": "nesting deeper than 64 levels"}]
    assert stored(store) == 2 and stored(store, "rejected_events") == 1


def test_the_nesting_limit_is_64_levels(client, keys):
    # 63 lists inside the row object: 64 levels, read (and rejected by validation, tags being a map);
    # one more is too deep.
    r = post_text(client, keys["ingest"], "[" + deep_row(63) + "]")
    assert r.status_code == 207 and "tags" in {e["field"] for e in r.json["errors"]}
    r = post_text(client, keys["ingest"], "[" + deep_row(64) + "]")
    assert r.status_code == 207 and r.json["errors"][0]["reason"] == "nesting deeper than 64 levels"


def test_a_body_of_one_deep_object_is_one_rejected_row(client, keys, store):
    # A body may be one object rather than an array of them: the same row, the same answer.
    r = post_text(client, keys["ingest"], deep_row(10_000))
    assert r.status_code == 207
    assert r.json == {"accepted": 0, "duplicates": 0, "rejected": 1,
                      "errors": [{"index": 0, "field": "_row", "reason": "nesting deeper than 64 levels"}]}
    assert stored(store, "rejected_events") == 1


@pytest.mark.parametrize("body", [
    "[" + json.dumps(request_event(1)) + ", " + deep_row(10_000)[:-1],  # truncated: the last row never closes
    "[" + json.dumps(request_event(1)) + ", " + deep_row(10_000) + "]]",  # one bracket too many
    "[" + json.dumps(request_event(1)) + ", " + deep_row(10_000) + "}",  # the body's brackets do not match
    "[" + deep_row(10_000) + ', {"request_id": "unterminated]',  # a string that never ends
    "[" + deep_row(10_000) + "] trailing",
    "[" + deep_row(10_000) + ",]",  # an empty element
    "[" * 10_000,
    "1 " + "[" * 10_000,  # not an array or an object at all
])
def test_a_deep_body_that_does_not_balance_is_refused_whole(client, keys, store, body):
    r = post_text(client, keys["ingest"], body)
    assert r.status_code == 400, r.data
    assert r.json["error"] == "bad_request" and "not valid JSON" in r.json["message"]
    assert stored(store) == 0 and stored(store, "rejected_events") == 0


def test_a_deep_body_still_counts_against_the_batch_limits(make_config, clock, make_store):
    from monitor.app import create_app
    cfg = make_config(ingest={"max_rows_per_batch": 3})
    app = create_app(cfg, make_store(cfg), clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    body = "[" + ", ".join([json.dumps(request_event(i)) for i in range(3)] + [deep_row(10_000)]) + "]"
    r = post_text(app.test_client(), key, body)
    assert r.status_code == 413 and "4 events" in r.json["message"]


@pytest.mark.parametrize("block", [1, 3, 7, 1 << 18])
def test_the_scanner_splits_rows_where_a_parser_does(monkeypatch, block):
    from monitor.ingest import bodies as api
    monkeypatch.setattr(api, "_SCAN_BLOCK", block)
    rows = [request_event(1, input_text='say "hi" ], {[ \\" \\\\', tags={"k,": "v]"}), 3.5, "a, [b]", [[1], {"x": []}],
            {}, {"é😀\\": ['\\\\"', "\\", None]}, []]
    for text in (json.dumps(rows), json.dumps(rows, ensure_ascii=False, indent=2)):
        raw = text.encode()
        spans = api._top_level_spans(raw, 100)
        assert [json.loads(raw[s:e]) for s, e, _ in spans] == rows
        assert [d for _, _, d in spans] == [2, 0, 0, 3, 1, 2, 1]
    one = json.dumps(rows[0]).encode()
    assert api._top_level_spans(b" " + one + b"\n", 100) == [(1, len(one) + 1, 2)]
    assert api._top_level_spans(b"[ ]", 100) == []


def test_every_gzip_member_is_read(client, keys, store):
    # gzip allows several members in one stream (`cat a.gz b.gz`, a writer that flushes members); zlib stops after
    # the first, so the rows of the others were dropped with a 200.
    lines = [json.dumps(request_event(i)) for i in range(5)]
    body = gzip.compress(("\n".join(lines[:3]) + "\n").encode()) + gzip.compress(("\n".join(lines[3:]) + "\n").encode())
    r = client.post("/v1/requests", data=body, headers={**auth(keys["ingest"]), "Content-Encoding": "gzip",
                                                        "Content-Type": "application/x-ndjson"})
    assert r.status_code == 200 and r.json["accepted"] == 5
    assert stored(store) == 5


def _cut_gzip(text: str) -> bytes:
    """A gzip stream flushed after ``text`` that never ends: a connection cut mid-body."""
    c = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return c.compress(text.encode()) + c.flush(zlib.Z_SYNC_FLUSH)


@pytest.mark.parametrize("body, reason", [
    # Whole lines, then no end: the rows that did arrive were stored with a 200, the loss unseen.
    (_cut_gzip("\n".join(json.dumps(request_event(i)) for i in range(3)) + "\n"), "truncated"),
    (gzip.compress(b"[1]") + b"not gzip", "not valid gzip"),  # garbage after a member
], ids=["cut-short", "garbage-after-a-member"])
def test_a_broken_gzip_stream_is_refused(client, keys, store, body, reason):
    r = client.post("/v1/requests", data=body, headers={**auth(keys["ingest"]), "Content-Encoding": "gzip",
                                                        "Content-Type": "application/x-ndjson"})
    assert r.status_code == 400 and reason in r.json["message"]
    assert stored(store) == 0


def test_the_size_limit_spans_every_gzip_member(make_config, clock, make_store):
    from monitor.app import create_app
    cfg = make_config(ingest={"max_body_bytes": 2000})
    app = create_app(cfg, make_store(cfg), clock)
    _, key = app.extensions["nlpmon"].keys.create("t", ["ingest"])
    member = gzip.compress((json.dumps(request_event(1, input_text="x" * 900)) + "\n").encode())
    assert len(member) * 3 < 2000  # each member and the body are small; together they inflate past the limit
    r = app.test_client().post("/v1/requests", data=member * 3, headers={
        **auth(key), "Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"})
    assert r.status_code == 413 and "decompressed" in r.json["message"]
