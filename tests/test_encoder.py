"""The embedding model in a child process (jobs/encoder.py): the same vectors, the model's memory out of the
serving process, a child that ends when idle, and one killed with SIGKILL failing the run clearly and the
next run encoding again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jobs import encoder
from jobs.embeddings import Embedder, EmbeddingError

TEXTS = ["Where is my parcel?", "How do I connect my crypto wallet to receive USDC payouts?",
         "Refunds reach the original payment method 5-10 business days after the return is scanned.",
         "Wie setze ich mein Passwort zurück?"]


def _gone(pid: int, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our child: reap it, or it lingers as a zombie that kill(0) still finds
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.05)
    return False


def test_the_worker_encodes_what_the_model_in_process_encodes(make_config, clock):
    worker = Embedder(None, make_config(embeddings={"worker": True, "worker_idle_seconds": 600, "precision": "float32"}),
                      clock)
    inline = Embedder(None, make_config(embeddings={"worker": False, "precision": "float32"}), clock)
    a, b = worker.encode(TEXTS), inline.encode(TEXTS)
    assert a.dtype == np.float32 and a.shape == b.shape == (4, 384)
    assert (a * b).sum(axis=1).min() > 0.99999
    assert worker.dimension == 384


def test_the_serving_process_never_loads_torch_and_the_child_ends_when_idle(tmp_path):
    """In a fresh interpreter, as `nlpmon serve` is: encoding through the worker imports neither torch nor
    sentence-transformers here, and the child is gone after worker_idle_seconds without an encode."""
    code = (
        "import sys, time, os\n"
        "from monitor.foundation.config import load_config\n"
        "from jobs.embeddings import Embedder\n"
        "from jobs import encoder\n"
        "cfg = load_config(env={}, overrides={'embeddings': {'worker_idle_seconds': 0}})\n"
        "v = Embedder(None, cfg).encode(['hello there', 'where is my order'])\n"
        "w = next(iter(encoder._WORKERS.values()))\n"
        "print(v.shape, 'torch' in sys.modules, 'sentence_transformers' in sys.modules, w.started)\n"
        "deadline = time.monotonic() + 20\n"
        "while w.pid is not None and time.monotonic() < deadline: time.sleep(0.05)\n"
        "print('ended' if w.pid is None else 'still running')\n"
        "v = Embedder(None, cfg).encode(['again'])\n"
        "print(v.shape, w.started)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines == ["(2, 384) False False 1", "ended", "(1, 384) 2"], out.stdout


def test_a_worker_killed_mid_run_fails_the_encode_clearly_and_the_next_encode_starts_a_new_one(make_config, clock):
    cfg = make_config(embeddings={"worker": True, "worker_idle_seconds": 600})
    emb = Embedder(None, cfg, clock)
    emb.encode(TEXTS[:1])
    w = encoder.worker(emb.path, cfg.embeddings.threads, emb.precision, emb.batch_size, 600)
    pid, started = w.pid, w.started
    assert pid is not None
    # Kill it while it encodes: a big enough batch that the kill lands mid-encode.
    import threading
    errors = []

    def big():
        try:
            emb.encode([f"{t} ({i})" for i in range(800) for t in TEXTS[:1]])
        except EmbeddingError as exc:
            errors.append(str(exc))
    t = threading.Thread(target=big)
    t.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    t.join(120)
    assert errors and f"process {pid} killed by signal 9" in errors[0]
    assert _gone(pid)
    again = emb.encode(TEXTS)
    assert again.shape == (4, 384) and w.started == started + 1 and w.pid != pid
    w.close()
    assert w.pid is None


def test_a_model_the_worker_cannot_load_is_the_same_clear_error(make_config, clock, tmp_path):
    cfg = make_config(embeddings={"worker": True, "model_path": str(tmp_path / "nothing-here")})
    with pytest.raises(EmbeddingError, match="embeddings.model_path: .* is not a directory"):
        Embedder(None, cfg, clock).check()
