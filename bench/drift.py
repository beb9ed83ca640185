"""Embedding throughput, the drift job's run time (cold and warm embedding cache), and CPU speed-ups for encoding.

    .venv/bin/python bench/drift.py [--texts 2000] [--repeat 3] [--variant-texts 1000] [--chunk 100]

1. Throughput of the packaged all-MiniLM-L6-v2, loaded as the service loads it
   (monitor.embeddings.load_model) and called as Embedder.encode calls it, at
   batch sizes 32, 64 and 128, on ``--texts`` distinct texts: 40% support
   questions from the topic pools of tests/topics.py, the rest longer
   answer-like texts. After a warm-up, ``--repeat`` rounds each encode every
   text once, split in three chunks that the batch sizes take in turn, shifted
   by one per round (a Latin square: after 3 rounds each batch size has
   encoded every text once, and a change in the machine's load hits all of
   them alike). Medians over rounds, in texts/s and tokens/s.
2. The drift job for one (service, feature) and the ``1h`` window: 1,000
   requests over the 7 days before the current hour (reference) and 1,000 in
   the current hour, 30% of them on a topic the reference never saw, ingested
   into an embedded chDB store in a temporary directory; ``drift.sample_size``
   1,000. ``DriftJob.run`` is timed with a cold embedding cache, then again
   with the cache the first run filled, and each run is broken down by
   wrapping what it calls (sampling, cache lookup, encoding, cache insert, each
   Evidently method, explanation, Evidently report and its 2-D picture, saving).
   A third run encodes under bfloat16 autocast (part 3's candidate) with its
   own cache key, so its cache is cold too: the speed-up end to end, and
   whether the drift decision stays the same. Importing Evidently, once per
   process, is timed apart.
3. Ways to encode faster on this CPU against the default (fp32, torch's
   default threads, ``embeddings.batch_size``), on the first
   ``--variant-texts`` texts of part 1: one torch thread, dynamic int8
   quantization of the Linear layers (all, or the attention ones only),
   bfloat16 weights, bfloat16 autocast, and sentence-transformers' ONNX
   backend when onnxruntime and optimum are installed. Every ``--chunk``
   texts are encoded by every variant in turn, so the ratio to the default is
   a median of paired measurements. For each variant: texts/s, ratio, and the
   min and mean cosine similarity of its vectors to the default's on the same
   texts, and how far its vectors' norms are from 1. Keep rule: at least KEEP_RATIO faster and min cosine at least
   KEEP_MIN_COSINE.

On a shared machine timings move with its load: every figure comes with the
CPU cores the process actually got (CPU time / wall time), and the load
average is printed per part. Nothing fails on a missed target and nothing is
downloaded. The temporary store is deleted at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import importlib.util
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import run_summary  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from jobs.drift import DriftJob  # noqa: E402
from jobs import drift_methods as drift_mod  # noqa: E402
from monitor.foundation import migrate  # noqa: E402
from monitor.app import create_app  # noqa: E402
from monitor.foundation.clock import ManualClock  # noqa: E402
from monitor.foundation.config import load_config  # noqa: E402
from jobs.embeddings import Embedder, load_model, model_path  # noqa: E402
from monitor.foundation.storage import Store  # noqa: E402
from tests import topics  # noqa: E402

UTC = dt.timezone.utc
HOUR = dt.timedelta(hours=1)
BATCH_SIZES = (32, 64, 128)
QUESTION_SHARE = 0.4  # of the part-1 texts; the topic pools hold about 800 distinct questions
N_REFERENCE, N_CURRENT, NEW_SHARE = 1000, 1000, 0.3
STRATUM = ("support-bot", "answer")
KEEP_RATIO = 1.10       # a "win": faster than the default by at least this (below it is within run-to-run noise)
KEEP_MIN_COSINE = 0.99  # and every text's vector within this cosine similarity of the default's
WIRE_RATIO = 1.3        # worth a config key in monitor/embeddings.py

# -- texts -----------------------------------------------------------------------
# Answer-like texts: an opener, 2-4 topic sentences, a closer; slots from the topic pools plus these.
_EXTRA_SLOTS = {
    "days": ("3", "5", "7", "10", "14", "30"),
    "amount": ("$4.99", "$12.00", "EUR 9.50", "$29.99", "$119.00", "GBP 15.00"),
    "hours": ("24", "48", "72"),
    "ref": ("INV-20431", "INV-88812", "RMA-5521", "RMA-7310", "CASE-1187", "CASE-4402"),
}
_OPENERS = (
    "Thanks for reaching out, and sorry for the trouble.",
    "Happy to help with that.",
    "Thanks for your patience while we looked into this.",
    "Good question, here is what to do.",
    "I understand how frustrating this is, let me walk you through it.",
    "Thanks for contacting support.",
)
_CLOSERS = (
    "If anything is still unclear, just reply to this message and we will pick it up.",
    "Let us know if there is anything else we can do for you.",
    "Your case number is {ref} in case you need to contact us again.",
    "We have added a note to your account so the next agent sees the history.",
    "Have a great day!",
    "You will also get an email confirmation within {hours} hours.",
)
ANSWERS = {
    "billing": (
        "The second charge of {amount} is a pre-authorisation that your bank releases within {days} days.",
        "You can download every invoice of the {plan} plan under Settings > Billing > Invoices.",
        "Switching from monthly to yearly billing takes effect at your next renewal and saves about two months.",
        "If your card was declined, update it under Settings > Billing and we will retry the payment automatically.",
        "To add a VAT number, open Billing details, enter it with the country prefix and future invoices will show it.",
        "Bank transfers are available for {n} seats or more; ask us for a pro-forma invoice and use {ref} as reference.",
        "The {plan} price changed on the first of the month; existing subscribers keep the old price for {days} days.",
    ),
    "shipping": (
        "Your {item} left our warehouse and is with the carrier; tracking can lag by up to {hours} hours.",
        "We ship {item} orders to {country}; standard delivery takes {n} to {days} business days.",
        "The delivery address can be changed until the parcel is handed to the carrier, under Orders > Edit address.",
        "When tracking has not moved for {n} days we open a trace with the carrier, which usually resolves it.",
        "Express delivery to {country} takes two to three business days and costs {amount}.",
        "Parcel lockers are available for the {item} at checkout if the box fits the locker size.",
        "If the {item} went to the wrong address, we will send a replacement once the carrier confirms the error.",
    ),
    "returns": (
        "You can return the {item} within 30 days; start the return under Orders and print the prepaid label.",
        "Refunds go back to the original payment method {n} to {days} days after the warehouse receives the item.",
        "For a damaged {item}, send us a photo and we will ship a replacement at no cost, no return needed.",
        "Return shipping is free for damaged or wrong items; for other returns a fee of {amount} is deducted.",
        "Exchanges for a different size or colour are made as a return plus a new order, so the new one ships right away.",
        "We are sorry you received the wrong item; keep it for now and we will send the {item} you ordered.",
    ),
    "account": (
        "If the reset email does not arrive, check the spam folder and make sure the address matches your account.",
        "Two-factor authentication is under Profile > Security on your {device}; scan the QR code with an authenticator app.",
        "Accounts unlock automatically after {hours} hours, or right away when you reset your password.",
        "To change your email address, confirm the new address from the link we send to it.",
        "Deleting your account removes all personal data within {days} days; invoices are kept as the law requires.",
        "After the last update, sign out on your {device}, clear the app cache and sign in again.",
        "The {plan} plan includes {n} seats; invite colleagues under Team > Members instead of sharing a login.",
    ),
    "crypto": (
        "Connect your wallet under Payouts > Crypto and confirm the signature request in your wallet app.",
        "{coin} payouts on {network} are processed in batches every {hours} hours, so a delay of {n} days is unusual.",
        "We support {coin} withdrawals on {network} and two other networks; the list is on the Payouts page.",
        "Network fees for {coin} on {network} are paid by us up to {amount} per payout.",
        "Payouts in {coin} are available in most countries once identity verification is complete.",
        "Withdrawals are rejected when the wallet address does not match the selected network; check {network} and retry.",
        "Staking is not available in the app at the moment, but {coin} balances can be held for up to {days} days.",
    ),
}
TOPIC_NAMES = tuple(topics.TOPICS)


def _fill(template: str, rng: random.Random) -> str:
    slots = {**topics._SLOTS, **_EXTRA_SLOTS}  # the pools' own slot values, plus a few for answers
    return template.format(**{k: rng.choice(v) for k, v in slots.items()})


def questions(n: int, seed: int, new_share: float = 0.0) -> list[tuple[str, str]]:
    """(topic, question) pairs drawn like tests.topics.sample, keeping the topic for the answer."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic = "crypto" if rng.random() < new_share else rng.choice(TOPIC_NAMES)
        pool = topics.NEW_TOPIC if topic == "crypto" else topics.TOPICS[topic]
        out.append((topic, _fill(rng.choice(pool), rng)))
    return out


def answer(topic: str, rng: random.Random) -> str:
    body = rng.sample(ANSWERS[topic], rng.randint(2, 4))
    return " ".join([rng.choice(_OPENERS)] + [_fill(s, rng) for s in body] + [_fill(rng.choice(_CLOSERS), rng)])


def corpus(n: int, seed: int = 7) -> tuple[list[str], int]:
    """``n`` distinct texts: up to QUESTION_SHARE distinct questions, the rest answers; returns (texts, questions)."""
    rng = random.Random(seed)
    qs = list(dict.fromkeys(q for _, q in questions(20 * n, seed, new_share=NEW_SHARE)))
    rng.shuffle(qs)
    qs = qs[:int(n * QUESTION_SHARE)]
    answers: dict[str, None] = {}
    while len(answers) < n - len(qs):
        answers[answer(rng.choice(TOPIC_NAMES + ("crypto",)), rng)] = None
    texts = qs + list(answers)
    rng.shuffle(texts)
    return texts, len(qs)


# -- measuring -------------------------------------------------------------------
def timed(fn):
    """(result, wall seconds, CPU cores this process got while it ran)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return out, wall, (time.process_time() - c0) / wall if wall else float("nan")


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def cpu_line() -> str:
    name, flags = "unknown CPU", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    wanted = [fl for fl in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if fl in flags]
    return f"{name}, {os.cpu_count()} CPUs; {', '.join(wanted) or 'no AVX2'}"


def tokens(model, texts: list[str]) -> list[int]:
    """Word pieces per text as the model sees them (special tokens included, cut at max_seq_length)."""
    enc = model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=model.max_seq_length)
    return [len(ids) for ids in enc["input_ids"]]


def encode(model, texts, batch_size) -> np.ndarray:
    # The call Embedder.encode makes.
    return np.asarray(model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False), dtype=np.float32)


# -- 1. throughput ---------------------------------------------------------------
def chunks(items: list, n: int) -> list[list]:
    """``items`` in ``n`` contiguous chunks of near-equal size."""
    bounds = [round(i * len(items) / n) for i in range(n + 1)]
    return [items[bounds[i]:bounds[i + 1]] for i in range(n)]


def bench_throughput(model, texts: list[str], n_questions: int, repeat: int) -> None:
    import torch
    toks = tokens(model, texts)
    chars = [len(t) for t in texts]
    print(f"\n1. throughput of the packaged model, fp32, torch threads {torch.get_num_threads()}; {load_line()}")
    print(f"  {len(texts):,} distinct texts: {n_questions:,} questions, {len(texts) - n_questions:,} answers; "
          f"mean length {statistics.mean(chars):.0f} chars / {statistics.mean(toks):.1f} tokens "
          f"(median {statistics.median(chars):.0f} chars, max {max(chars)}), max_seq_length {model.max_seq_length}")
    _, warm, _ = timed(lambda: [encode(model, texts[:128], bs) for bs in BATCH_SIZES])
    # Latin square: each round encodes every text once, in one chunk per batch size, the chunks
    # rotating between batch sizes per round; after 3 rounds each batch size has encoded each text once.
    # Chunks stay large: sentence-transformers sorts a call's texts by length before batching, so
    # small calls with big batches would pay padding that Embedder.encode (one call for all misses) does not.
    n_chunks = len(BATCH_SIZES)
    parts = chunks(list(zip(texts, toks)), n_chunks)
    print(f"  warm-up: 128 texts at each batch size, {warm:.1f} s; then {repeat} round(s) of {len(texts):,} texts "
          f"in {n_chunks} chunks of ~{len(texts) // n_chunks}, the batch sizes taking the chunks in turn")
    per_round: dict[int, list[tuple[int, int, float, float]]] = {bs: [] for bs in BATCH_SIZES}
    for r in range(repeat):
        acc = {bs: [0, 0, 0.0, 0.0] for bs in BATCH_SIZES}  # texts, tokens, wall s, CPU s
        for c, part in enumerate(parts):
            bs = BATCH_SIZES[(c + r) % len(BATCH_SIZES)]
            chunk_texts = [t for t, _ in part]
            _, wall, cores = timed(lambda t=chunk_texts, b=bs: encode(model, t, b))
            a = acc[bs]
            a[0] += len(part)
            a[1] += sum(k for _, k in part)
            a[2] += wall
            a[3] += wall * cores
        for bs, a in acc.items():
            if a[0]:
                per_round[bs].append(tuple(a))
    print(f"  {'batch':>5} {'texts/s':>8} {'tokens/s':>9} {'rounds min..max texts/s':>24} {'cores':>6}")
    for bs, rounds in per_round.items():
        rates = [n / w for n, _, w, _ in rounds]
        tok_rates = [k / w for _, k, w, _ in rounds]
        cores = sum(c for *_, c in rounds) / sum(w for _, _, w, _ in rounds)
        print(f"  {bs:>5} {statistics.median(rates):>8.0f} {statistics.median(tok_rates):>9.0f} "
              f"{min(rates):>15.0f}..{max(rates):<8.0f} {cores:>6.2f}")
    print(f"  (median over {repeat} round(s); in each round a batch size encodes one chunk, 1/{len(BATCH_SIZES)} "
          "of the texts, in one call)")


# -- 2. drift job ----------------------------------------------------------------
def requests(pairs: list[tuple[str, str]], start: dt.datetime, span: dt.timedelta, prefix: str, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for i, (topic, question) in enumerate(pairs):
        inp, outp = rng.randint(20, 80), rng.randint(60, 250)
        out.append({"request_id": f"{prefix}-{i}", "ts": (start + span * (i / len(pairs))).isoformat(),
                    "service": STRATUM[0], "feature": STRATUM[1], "model": "gpt-4o-mini", "provider": "openai",
                    "status": "ok", "latency_ms": round(rng.lognormvariate(7.2, 0.5), 1), "input_tokens": inp,
                    "output_tokens": outp, "input_text": question, "output_text": answer(topic, rng)})
    return out


class Breakdown:
    """Wraps what the drift job calls, adding up wall time and calls per step while a run is on."""

    STEPS = (
        ("sample", DriftJob, "_sample", "sample requests (2 queries)"),
        ("embed", Embedder, "embed", "Embedder.embed, all of it"),
        ("lookup", Embedder, "_lookup", "  cache lookup"),
        ("encode", Embedder, "encode", "  encode (cache misses)"),
        ("compare", drift_mod, "compare", "compare: 3 Evidently methods x 2 sides"),
        ("explain", drift_mod, "explain", "explain (sides with drift)"),
        ("report", drift_mod, "report", "Evidently report (snapshot)"),
        # The 2-D picture of the embeddings: monitor.drift's PCA stand-in when it has one, else Evidently's t-SNE.
        ("picture", getattr(drift_mod, "_PlanePicture", TSNE), "fit_transform",
         "  of which the 2-D picture" + (" (PCA)" if hasattr(drift_mod, "_PlanePicture") else " (t-SNE)")),
        ("numeric", drift_mod, "numeric_drift", "numeric drift from the snapshot"),
        ("save", DriftJob, "_save", "save report (JSON + insert)"),
    )

    def __init__(self):
        self.time: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.method_time: dict[str, float] = {}
        self._saved: list = []

    def _wrap(self, key, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.time[key] = self.time.get(key, 0.0) + time.perf_counter() - t0
                self.calls[key] = self.calls.get(key, 0) + 1
        return wrapper

    def __enter__(self):
        for key, owner, attr, _ in self.STEPS:
            orig = getattr(owner, attr)
            self._saved.append((owner, attr, orig))
            setattr(owner, attr, self._wrap(key, orig))
        orig_methods = drift_mod._methods  # time each Evidently method inside compare()
        self._saved.append((drift_mod, "_methods", orig_methods))
        drift_mod._methods = lambda q: {name: self._wrap(f"method:{name}", m) for name, m in orig_methods(q).items()}
        return self

    def __exit__(self, *exc):
        for owner, attr, orig in reversed(self._saved):
            setattr(owner, attr, orig)
        self._saved.clear()

    def print(self, total: float, encoded: int, texts: int) -> None:
        accounted = 0.0
        for key, _, _, label in self.STEPS:
            t = self.time.get(key, 0.0)
            if key in ("sample", "embed", "compare", "explain", "report", "numeric", "save"):
                accounted += t
            extra = ""
            if key == "picture" and not self.calls.get(key):
                print(f"    {label:<42} not called")
                continue
            if key == "encode" and t:
                extra = f"  {encoded:,} texts, {encoded / t:,.0f} texts/s"
            elif key == "embed":
                extra = f"  {texts:,} texts asked for, {encoded:,} encoded"
            elif key == "compare":
                extra = "  (" + ", ".join(f"{k.split(':', 1)[1]} {v:.2f} s" for k, v in self.time.items()
                                          if k.startswith("method:")) + ")"
            print(f"    {label:<42} {t:>7.2f} s {t / total:>6.1%}  x{self.calls.get(key, 0)}{extra}")
        if "embed" in self.time:
            rest = self.time["embed"] - self.time.get("lookup", 0) - self.time.get("encode", 0)
            print(f"    {'  hashing + cache insert':<42} {rest:>7.2f} s {rest / total:>6.1%}")
        other = total - accounted
        print(f"    {'other (strata query, points, run record)':<42} {other:>7.2f} s {other / total:>6.1%}")


def bench_drift_job(store: Store, config, end: dt.datetime) -> None:
    lo = end - HOUR
    ref_lo = lo - dt.timedelta(days=config.drift.reference_days)
    clock = ManualClock(end + dt.timedelta(minutes=2))
    ingestor = create_app(config, store, clock).extensions["nlpmon"].ingestor
    ref = requests(questions(N_REFERENCE, 11), ref_lo, lo - ref_lo, "ref", 21)
    cur = requests(questions(N_CURRENT, 12, new_share=NEW_SHARE), lo, HOUR, "cur", 22)
    t0 = time.perf_counter()
    for batch in (ref, cur):
        result = ingestor.ingest("requests", batch)
        if result.rejected:
            raise SystemExit(f"ingest rejected {result.rejected} events: {result}")
    ingest_s = time.perf_counter() - t0
    texts = [e["input_text"] for e in ref + cur] + [e["output_text"] for e in ref + cur]
    print(f"\n2. drift job, {STRATUM[0]}/{STRATUM[1]}, window 1h ending {end:%Y-%m-%d %H:%M} UTC; {load_line()}")
    print(f"  ingested {len(ref):,} requests over {ref_lo:%m-%d %H:%M}..{lo:%m-%d %H:%M} and {len(cur):,} in "
          f"{lo:%H:%M}..{end:%H:%M} ({NEW_SHARE:.0%} on a new topic) in {ingest_s:.1f} s")
    print(f"  texts to embed per run: {len(texts):,} ({len(set(texts)):,} distinct); mean length: questions "
          f"{statistics.mean(len(e['input_text']) for e in ref + cur):.0f} chars, answers "
          f"{statistics.mean(len(e['output_text']) for e in ref + cur):.0f} chars")
    _, import_s, _ = timed(lambda: importlib.import_module("evidently"))
    print(f"  import evidently (once per process, on the first report; not in the runs below): {import_s:.1f} s")
    print(f"  config: drift.windows {list(config.drift.windows)}, sample_size {config.drift.sample_size}, "
          f"embeddings.batch_size {config.embeddings.batch_size}, threads {config.embeddings.threads or 'torch default'}")

    import torch
    runs = (("cold cache", None), ("warm cache", None),
            # Part 3's best candidate end to end: its own cache key, so the cache is cold again.
            ("cold cache, encoding under bfloat16 autocast", torch.bfloat16))
    for label, autocast in runs:
        job = DriftJob(store, config, clock, config.jobs.schedule.drift)
        cached = store.scalar("SELECT count() FROM embedding_cache")
        with Breakdown() as bd:
            job.embedder = Embedder(store, config, clock)  # a fresh one: nothing held in memory
            if autocast is not None:
                job.embedder.model_id += ":autocast-bf16"
                job.embedder.encode = _autocast(job.embedder.encode, autocast)
            res, wall, cores = timed(lambda j=job: j.run(now=clock.now(), since=lo))
        print(f"\n  {label} ({cached:,} vectors in embedding_cache before): status {res.status}"
              + (f" ({res.error})" if res.error else "")
              + f", {res.rows} points; run {wall:.2f} s (RunResult {res.duration_ms / 1000:.2f} s), "
              f"{cores:.2f} cores")
        bd.print(wall, job.embedder.encoded, len(texts))
        print(f"    decision: {decision(store)}")


def _autocast(encode_fn, dtype):
    import torch

    def run(texts, progress=False):
        with torch.autocast("cpu", dtype=dtype):
            return encode_fn(texts, progress=progress)
    return run


def decision(store: Store) -> str:
    row = store.query_dicts("SELECT status, summary FROM drift_reports FINAL "
                            "WHERE service = {s:String} AND feature = {f:String} AND `window` = '1h'",
                            {"s": STRATUM[0], "f": STRATUM[1]})
    if not row:
        return "no report"
    s = json.loads(row[0]["summary"])
    sides = "; ".join(f"{side} {'DRIFT' if v['detected'] else 'no drift'} ("
                      + ", ".join(f"{m} {r['score']:.3f}{'*' if r['detected'] else ''}" if r["score"] is not None
                                  else f"{m} could not run" for m, r in v["methods"].items()) + ")"
                      for side, v in s.get("sides", {}).items())
    return f"{row[0]['status']}, samples {s['samples']['reference']}/{s['samples']['current']}; {sides} (* = detected)"


# -- 3. faster encoding ----------------------------------------------------------
def variants(model, path: str, threads_default: int):
    """(name, encode(texts) -> vectors, note) per variant; the first is the default."""
    import torch
    bs = BATCH

    def with_threads(n, fn):
        def run(texts):
            torch.set_num_threads(n)
            try:
                return fn(texts)
            finally:
                torch.set_num_threads(threads_default)
        return run

    out = [(f"default: fp32, {threads_default} threads", lambda t: encode(model, t, bs), "")]
    other = 1 if threads_default != 1 else 2
    out.append((f"torch.set_num_threads({other})", with_threads(other, lambda t: encode(model, t, bs)), ""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        q_all = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        attention = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".attention." in n}
        q_att = torch.ao.quantization.quantize_dynamic(model, attention, dtype=torch.qint8)
    out.append(("int8 dynamic, all Linear layers", lambda t: encode(q_all, t, bs),
                f"torch.ao quantize_dynamic, qint8, engine {torch.backends.quantized.engine}"))
    out.append(("int8 dynamic, attention Linear only", lambda t: encode(q_att, t, bs),
                f"{len(attention)} of the Linear layers; the feed-forward ones stay fp32"))
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    out.append(("bfloat16 weights", lambda t: encode(bf16, t, bs), "copy of the model .to(torch.bfloat16)"))

    def autocast(t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encode(model, t, bs)
    out.append(("bfloat16 autocast", autocast, "torch.autocast('cpu', torch.bfloat16) around encode"))

    missing = [m for m in ("onnxruntime", "optimum") if importlib.util.find_spec(m) is None]
    if missing:
        out.append(("ONNX backend (sentence-transformers)", None,
                    f"skipped: {', '.join(missing)} not installed (pip install 'sentence-transformers[onnx]')"))
    else:
        try:
            from sentence_transformers import SentenceTransformer
            onnx = SentenceTransformer(path, device="cpu", backend="onnx", local_files_only=True)
            out.append(("ONNX backend (sentence-transformers)", lambda t: encode(onnx, t, bs), "onnxruntime, CPU"))
        except Exception as exc:  # noqa: BLE001 - e.g. no ONNX file and no exporter: report it, do not fail the bench
            out.append(("ONNX backend (sentence-transformers)", None,
                        f"skipped: {type(exc).__name__}: {str(exc)[:150]}"))
    return out


BATCH = 64  # set from embeddings.batch_size in main()


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def bench_variants(model, path: str, texts: list[str], chunk: int) -> None:
    import torch
    threads_default = torch.get_num_threads()
    t0 = time.perf_counter()
    vs = variants(model, path, threads_default)
    runnable = [(n, fn) for n, fn, _ in vs if fn is not None]
    parts = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    print(f"\n3. faster encoding: {len(texts):,} texts of part 1 in {len(parts)} chunks of {chunk}, batch size "
          f"{BATCH}; variants built in {time.perf_counter() - t0:.1f} s; {load_line()}")
    print("  every chunk is encoded by every variant, one after the other (order rotating per chunk); ratio = "
          "median over chunks of the default's time / the variant's on the same chunk")
    for _, fn in runnable:  # warm-up
        fn(texts[:64])
    walls = {n: [] for n, _ in runnable}
    cpu = {n: 0.0 for n, _ in runnable}
    vecs = {n: [] for n, _ in runnable}
    for c, part in enumerate(parts):
        order = runnable[c % len(runnable):] + runnable[:c % len(runnable)]
        for name, fn in order:
            vec, wall, cores = timed(lambda f=fn, p=part: f(p))
            walls[name].append(wall)
            cpu[name] += wall * cores
            vecs[name].append(vec)
    base = runnable[0][0]
    ref = unit(np.vstack(vecs[base]))
    print(f"  {'variant':<38} {'texts/s':>8} {'ratio':>6} {'(chunks min..max)':>17} {'cores':>6} "
          f"{'cos min':>9} {'cos mean':>9} {'|norm-1|':>9}  verdict")
    for name, fn, note in vs:
        if fn is None:
            print(f"  {name:<38} {note}")
            continue
        rate = len(texts) / sum(walls[name])
        paired = [b / w for b, w in zip(walls[base], walls[name])]
        ratio = statistics.median(paired)
        v = np.vstack(vecs[name]).astype(np.float64)
        cos = np.einsum("ij,ij->i", unit(v), ref)
        norm_err = np.abs(np.linalg.norm(v, axis=1) - 1).max()
        if name == base:
            verdict = "baseline"
        elif ratio < KEEP_RATIO:
            verdict = "no win"
        elif cos.min() < KEEP_MIN_COSINE:
            verdict = f"faster, but min cosine < {KEEP_MIN_COSINE}"
        else:
            verdict = "KEEP" + (f" (>= {WIRE_RATIO}x)" if ratio >= WIRE_RATIO else "")
        print(f"  {name:<38} {rate:>8.0f} {ratio:>5.2f}x {min(paired):>8.2f}..{max(paired):<8.2f} "
              f"{cpu[name] / sum(walls[name]):>6.2f} {cos.min():>9.5f} {cos.mean():>9.5f} {norm_err:>9.1e}  {verdict}")
        if note and name != base:
            print(f"  {'':<38} ({note})")
    print(f"  keep rule: ratio >= {KEEP_RATIO}x and min cosine >= {KEEP_MIN_COSINE} (over all {len(texts):,} texts); "
          f"worth a config key at >= {WIRE_RATIO}x")


# -- main ------------------------------------------------------------------------
def main() -> None:
    global BATCH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=2000, help="distinct texts for throughput and variants")
    ap.add_argument("--repeat", type=int, default=3, help="rounds over the texts in part 1, after one warm-up")
    ap.add_argument("--variant-texts", type=int, default=1000, help="texts (of --texts) for part 3")
    ap.add_argument("--chunk", type=int, default=100, help="texts per paired measurement in part 3")
    args = ap.parse_args()
    t_start = time.perf_counter()
    with contextlib.suppress(Exception):
        import transformers
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

    tmp = tempfile.mkdtemp(prefix="nlpmon-bench-drift-")
    config = load_config(env={}, overrides={"clickhouse": {"url": f"chdb://{tmp}", "database": "bench"},
                                            "drift": {"windows": ["1h"], "sample_size": N_REFERENCE}})
    BATCH = config.embeddings.batch_size
    store = Store.from_config(config)
    try:
        migrate.upgrade(store, config)
        import sentence_transformers
        import torch
        print(f"machine: {cpu_line()}")
        print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), sentence-transformers "
              f"{sentence_transformers.__version__}, chDB (ClickHouse {store.scalar('SELECT version()')}), "
              f"store in {tmp}")
        path = model_path(config)
        _, load_s, _ = timed(lambda: load_model(path, config.embeddings.threads))
        model = load_model(path)
        print(f"model: {path} loaded in {load_s:.1f} s, dimension {(getattr(model, 'get_embedding_dimension', None) or model.get_sentence_embedding_dimension)()}")

        texts, n_questions = corpus(args.texts)
        bench_throughput(model, texts, n_questions, args.repeat)
        end = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        bench_drift_job(store, config, end)
        bench_variants(model, path, texts[:args.variant_texts], args.chunk)
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(run_summary(t_start))


if __name__ == "__main__":
    main()
