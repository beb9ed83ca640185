"""Property-based: malformed rows and bodies never cause a 5xx, valid rows land once, invalid rows are kept."""
from __future__ import annotations

import json
import uuid

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import auth, request_event

FIELDS = list(request_event(0)) + ["tags", "cache_hit", "cost_usd", "user_id", "input_embedding", "bogus"]
junk = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


@st.composite
def rows(draw):
    """A valid event, sometimes with one or two fields replaced by junk or removed."""
    ev = request_event(uuid.uuid4().hex)
    broken = draw(st.booleans())
    if broken:
        for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True)):
            if draw(st.booleans()):
                ev[name] = draw(junk)
            else:
                ev.pop(name, None)
    return ev


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(batch=st.lists(rows(), min_size=1, max_size=15))
@example(batch=[request_event(0), request_event(0)])  # one id twice in a batch (found by hypothesis)
def test_rows_land_once_or_are_kept_with_a_reason(client, keys, store, batch):
    store.command("TRUNCATE TABLE requests")
    store.command("TRUNCATE TABLE rejected_events")
    body = json.dumps(batch, allow_nan=True)
    r = client.post("/v1/requests", data=body, content_type="application/json", headers=auth(keys["ingest"]))
    assert r.status_code in (200, 207), r.data
    res = r.json
    assert res["accepted"] + res["rejected"] == len(batch)
    bad = {e["index"] for e in res["errors"]}
    assert len(bad) == res["rejected"]
    assert all(e["field"] and e["reason"] for e in res["errors"])
    good = [batch[i]["request_id"] for i in range(len(batch)) if i not in bad]
    # A valid row whose id came earlier in the same batch is a duplicate: it lands once.
    good_ids = sorted(set(good))
    assert res["duplicates"] == len(good) - len(good_ids)
    assert sorted(x[0] for x in store.query("SELECT request_id FROM requests")) == good_ids
    kept = store.query("SELECT row_index, reason FROM rejected_events ORDER BY row_index")
    assert [k[0] for k in kept] == sorted(bad) and all(k[1] for k in kept)
    # A replay changes nothing.
    again = client.post("/v1/requests", data=body, content_type="application/json", headers=auth(keys["ingest"])).json
    assert again["duplicates"] == res["accepted"]
    assert store.scalar("SELECT count() FROM requests") == len(good_ids)


@SETTINGS
@given(body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
       ctype=st.sampled_from(["application/json", "application/x-ndjson", "text/plain", ""]),
       gz=st.booleans())
def test_arbitrary_bodies_never_cause_a_server_error(client, keys, body, ctype, gz):
    headers = {**auth(keys["ingest"]), "Content-Type": ctype}
    if gz:
        headers["Content-Encoding"] = "gzip"
    for path in ("/v1/requests", "/v1/feedback"):
        r = client.post(path, data=body, headers=headers)
        assert r.status_code < 500, (r.status_code, r.data)
        assert r.is_json


@SETTINGS
@given(value=junk)
def test_any_json_value_as_a_row_is_answered(client, keys, value):
    r = client.post("/v1/feedback", data=json.dumps([value], allow_nan=True), content_type="application/json",
                    headers=auth(keys["ingest"]))
    assert r.status_code in (200, 207)
    assert r.json["rejected"] == 1 and r.json["errors"][0]["index"] == 0
