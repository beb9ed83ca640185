"""The embedding model in a child process, started when a job first encodes and ended when no job has for
``embeddings.worker_idle_seconds``.

The serving process runs beside the services it watches for weeks; the model (torch, the tokenizer, the
weights and torch's working memory after the first batches) is about 500 MiB of it, used for minutes a day
by the drift, grounding and releases jobs. In a child that ends after them, that memory goes back to the
machine between runs. The price is the model's load (seconds) on the first encode of a run.

The child speaks over its stdin and a duplicate of its stdout: frames of a 4-byte length and a pickle.
A request is ``("encode", texts)`` or ``("dimension", None)``; the answer ``("ok", value)`` or
``("error", message)``. The child's own stdout goes to stderr, so a library that prints cannot
corrupt a frame. One request at a time: jobs that encode at once (the demo's drift and releases) take
turns, as they would for the cores.

A child that dies (killed, out of memory) fails the encode in progress with an :class:`EmbeddingError`
saying so; the job fails, is retried on its schedule, and the next encode starts a new child.

    python -m jobs.encoder <model path> <threads> <precision> <batch size>   (the child; not for people)
"""
from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)
_HEADER = struct.Struct(">I")
_ROOT = str(Path(__file__).resolve().parent.parent)


class EncoderError(RuntimeError):
    """The child failed to load the model or to encode, or died; the message says which."""


def _write(stream, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read(stream) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    size = _HEADER.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class EncoderProcess:
    """One child for one model; :meth:`call` starts it when none runs; a timer ends it when idle."""

    def __init__(self, path: str, threads: int, precision: str, batch_size: int, idle_seconds: float):
        self.args = [path, str(threads), precision, str(batch_size)]
        self.idle_seconds = idle_seconds
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.started = 0  # children started so far (a test and the benchmark read it)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def call(self, op: str, payload: Any = None) -> Any:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                proc = self._running()
                try:
                    _write(proc.stdin, (op, payload))
                    status, value = _read(proc.stdout)
                except (EOFError, BrokenPipeError, OSError):
                    code = proc.wait(timeout=10)
                    self._proc = None
                    how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
                    raise EncoderError(f"the embedding worker process {proc.pid} {how} while encoding; "
                                       "the next run starts a new one") from None
                if status != "ok":
                    raise EncoderError(value)
                return value
            finally:
                if self._proc is not None:
                    timer = threading.Timer(self.idle_seconds, lambda: self._stop_if_idle(timer))
                    timer.daemon = True
                    self._timer = timer
                    timer.start()

    def _running(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen([sys.executable, "-m", "jobs.encoder", *self.args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env, cwd=_ROOT)
        self.started += 1
        log.info("embedding worker %s started for %s", self._proc.pid, self.args[0])
        return self._proc

    def _stop_if_idle(self, timer: threading.Timer) -> None:
        with self._lock:  # after a call in progress, which armed a timer of its own
            if self._timer is timer:
                self._timer = None
                self.stop()

    def stop(self) -> None:
        """End the child (its memory goes back to the machine). Callers hold the lock or own the object."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # the child's loop ends on end of input
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            proc.stdout.close()
        log.info("embedding worker %s ended (idle)", proc.pid)

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.stop()


_WORKERS: dict[tuple, EncoderProcess] = {}
_WORKERS_LOCK = threading.Lock()


def worker(path: str, threads: int, precision: str, batch_size: int, idle_seconds: float) -> EncoderProcess:
    """The process-wide worker for this model and these settings."""
    key = (path, threads, precision, batch_size, idle_seconds)
    with _WORKERS_LOCK:
        if key not in _WORKERS:
            _WORKERS[key] = EncoderProcess(path, threads, precision, batch_size, idle_seconds)
        return _WORKERS[key]


def close_all() -> None:
    with _WORKERS_LOCK:
        for w in _WORKERS.values():
            w.close()


# -- the child ------------------------------------------------------------------------------------------
def _serve(path: str, threads: int, precision: str, batch_size: int) -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into a frame
    inp = sys.stdin.buffer
    from jobs.embeddings import EmbeddingError, autocast, load_model
    try:
        model = load_model(path, threads)
        failure = None
    except EmbeddingError as exc:
        model, failure = None, str(exc)
    while True:
        try:
            op, payload = _read(inp)
        except EOFError:
            return
        if failure is not None:
            _write(out, ("error", failure))
            continue
        try:
            if op == "dimension":
                value: Any = int(model.get_sentence_embedding_dimension())
            elif op == "encode":
                texts: Sequence[str] = payload["texts"]
                with autocast(precision):
                    value = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=payload["progress"])
            else:
                raise ValueError(f"unknown request {op!r}")
            _write(out, ("ok", value))
        except Exception as exc:  # the parent turns it into an EmbeddingError naming the model
            _write(out, ("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
