"""The language of a request's input: detected at ingest when the app does not send it, ``und`` when the
text cannot tell, kept (as its primary subtag) when sent; ``language_source`` says which."""
from __future__ import annotations

import collections

import pytest

from monitor.ingest.language import LanguageDetector, sent_language
from tests.helpers import auth, request_event
from tests.language_samples import LABELLED, UNDETERMINED


@pytest.fixture(scope="module")
def detector():
    return LanguageDetector()


@pytest.mark.fast
def test_the_labelled_set_gets_its_languages_and_never_a_wrong_one(detector):
    assert len({lang for lang, _ in LABELLED}) >= 8
    got = [(lang, detector.detect(text), text) for lang, text in LABELLED]
    wrong = [(lang, found, text) for lang, (found, _), text in got if found not in (lang, "und")]
    assert wrong == []  # a wrong language is worse than none: it would put users in another segment
    right = collections.Counter(lang for lang, (found, source), _ in got if found == lang and source == "detected")
    assert sum(right.values()) >= 0.95 * len(LABELLED), got
    assert all(right[lang] >= 5 for lang, _ in LABELLED), right  # every language, short texts and long


@pytest.mark.fast
@pytest.mark.parametrize("why, text", UNDETERMINED)
def test_what_has_no_language_is_undetermined_not_a_guess(detector, why, text):
    assert detector.detect(text) == ("und", "undetermined")


@pytest.mark.fast
def test_a_question_with_a_url_an_order_number_or_a_redaction_mark_is_still_its_language(detector):
    assert detector.detect("Mi pedido 48213 no llegó, el seguimiento en https://shop.example.com/t/48213 no "
                           "funciona")[0] == "es"
    assert detector.detect("Bitte schicken Sie die Rechnung an [EMAIL], die alte Adresse gilt nicht mehr")[0] == "de"
    assert detector.detect("Приложение Spotify не открывается после обновления")[0] == "ru"  # a Latin name in it
    assert detector.detect("iPhoneの設定からアプリの通知をオフにできますか")[0] == "ja"


@pytest.mark.fast
@pytest.mark.parametrize("sent, stored", [("de", "de"), ("de-DE", "de"), ("pt_BR", "pt"), ("EN", "en"),
                                          ("zh-Hant-TW", "zh"), ("German", "German"), ("und", "und")])
def test_a_sent_language_is_kept_as_its_primary_subtag(sent, stored):
    assert sent_language(sent) == stored


def test_ingest_detects_keeps_and_says_which(client, keys, store):
    rows = [request_event("de", input_text="Wo ist mein Paket? Es sollte gestern ankommen."),
            request_event("sent", input_text="Wo ist mein Paket? Es sollte gestern ankommen.", language="pt-BR"),
            request_event("short", input_text="ok"),
            request_event("json", input_text='{"order_id": 48213, "status": "shipped"}'),
            request_event("none", input_text="")]
    assert client.post("/v1/requests", json=rows, headers=auth(keys["ingest"])).json["accepted"] == 5
    got = {}
    for rid in ("de", "sent", "short", "json", "none"):
        body = client.get(f"/v1/requests/req-{rid}", headers=auth(keys["read"])).json["request"]
        got[rid] = (body["language"], body["language_source"])
    assert got == {"de": ("de", "detected"), "sent": ("pt", "sent"), "short": ("und", "undetermined"),
                   "json": ("und", "undetermined"), "none": ("und", "undetermined")}
    # The rollups and the pages read the stored column; the raw row holds the same.
    assert store.query("SELECT language, language_source FROM requests WHERE request_id = 'req-de'") == [
        ("de", "detected")]


def test_detection_off_stores_und(make_config, make_store, clock):
    from monitor.app import create_app
    config = make_config(segments={"detect_language": False})
    store = make_store(config)
    app = create_app(config, store, clock)
    key = app.extensions["nlpmon"].keys.create("app", ["ingest"])[1]
    client = app.test_client()
    rows = [request_event(1, input_text="Wo ist mein Paket? Es sollte gestern ankommen."),
            request_event(2, language="fr")]
    assert client.post("/v1/requests", json=rows, headers=auth(key)).json["accepted"] == 2
    assert sorted(store.query("SELECT language, language_source FROM requests")) == [
        ("fr", "sent"), ("und", "undetermined")]
