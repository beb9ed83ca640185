"""Python client for the ingest API: a bounded queue, a background sender, retries, a bounded exit.

    client = Client("http://127.0.0.1:8080", api_key)
    client.log_request({...})      # queued; returns at once, never raises on delivery problems
    client.log_feedback({...})
    client.flush(timeout=2.0)      # optional: wait for what is queued (also done at exit, bounded)

Why a queue and a thread: ``log_request`` runs on the application's thread, which belongs to
the host (a web request, a worker's job), and a monitor must never hurt what it monitors. So
logging only serializes the event and appends it to a bounded in-memory queue; a daemon sender
thread sends batches of up to ``batch_size`` events when that many are waiting or every
``flush_interval`` seconds, requests before feedback (feedback refers to them). This is what
the OpenTelemetry BatchSpanProcessor and the Langfuse and Helicone SDKs do: a bounded queue,
a background worker, drop-and-count when full, a bounded shutdown.

What happens to an event:

- **delivered**: the server answered 2xx. Rows it rejected (a 207 with per-row reasons) were
  delivered too: the server keeps them in ``rejected_events``; they are counted in
  ``totals["rejected"]`` and the reasons are in ``errors``.
- **retried**: connection errors, 429, 502, 503 and 504 (the server or its store is
  unavailable) are retried by the sender thread with exponential backoff and jitter, honouring
  Retry-After, for as long as it takes: an outage does not discard data on a timer. The batch
  stays at the head of the queue meanwhile (nothing behind it could get through either), and
  the server's request_id de-duplication means a resend never doubles an event.
- **dropped** (``dropped``): the queue holds at most ``max_queue`` events, counting the batch
  being sent. While the server is down the queue fills, and then each new event is dropped and
  counted, never waited for: memory is bounded, and the caller is never blocked.
- **refused** (``failed``, ``totals["failed"]``): an answer that a resend would meet again sets
  the events aside with the status and reason, so they never hold up the events behind them.
  413 (too large) splits the batch in halves and sends each, down to a single event, which is
  set aside. 400 (the batch body was refused), 404, 415, other 4xx, and 500 (nlpmon answers
  500 for a bug: the store rejected nlpmon's own query) set the batch aside. 401 and 403 mean
  the key is wrong or lacks the ingest scope, which no resend fixes: the client logs one
  warning and from then on sets every event aside without contacting the server. ``failed``
  keeps the first ``max_failed`` refusals (kind, event, status, reason); the rest are counted.

At interpreter exit (``flush_at_exit``) every live client flushes for at most ``exit_timeout``
seconds, all clients together, and a client that could not deliver everything writes one line
to stderr: ``nlpmon client: N events not delivered (M dropped, K refused, J still queued after
5 s): <last reason>``. Exit never waits longer than that bound, and the exit code is the
application's.

``close(timeout)`` (and leaving a ``with Client(...)`` block, for at most ``exit_timeout``)
flushes and stops the sender; events logged after it are dropped and counted. Problems are
logged once each (queue full, a refusal per status, a refused key) on the ``nlpmon.client``
logger, never per event. A forked child starts with an empty queue and its own sender: the
parent sends what it had queued.

``send(kind, events)`` is the synchronous path (used by ``nlpmon ingest --url`` and ``nlpmon
demo --url``): it sends one batch now, retries retryable failures up to ``max_retries`` times,
returns the server's answer, and raises :class:`ClientError` on a refusal or after the last
retry (``max_retries`` bounds only this path). It does not use the queue or the thread.
"""
from __future__ import annotations

import atexit
import collections
import gzip
import http.client
import json
import logging
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable
from typing import Self

from monitor import __version__

log = logging.getLogger("nlpmon.client")

KINDS = ("requests", "feedback")  # send order: feedback refers to requests


class ClientError(RuntimeError):
    """The server refused a batch (4xx, 500) or stayed unavailable through every retry."""

    def __init__(self, message: str, status: int | None = None, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


# 500 is not here: nlpmon answers it for a bug, which a resend would meet again.
_RETRY_STATUSES = {429, 502, 503, 504}
_AUTH_STATUSES = {401, 403}


class Client:
    """Events for one nlpmon server, sent from a background thread (see the module docstring).

    ``batch_size`` events per request at most; ``max_queue`` events held at most (new ones are
    dropped and counted beyond it); a partial batch waits at most ``flush_interval`` seconds;
    ``backoff``/``max_backoff`` shape the retry delays; ``timeout`` bounds one HTTP request;
    ``max_retries`` bounds :meth:`send` only; ``exit_timeout`` bounds the flush at exit and at
    the end of a ``with`` block; ``max_failed`` bounds ``failed`` and ``errors``.
    """

    def __init__(self, url: str, api_key: str, *, batch_size: int = 500, compress: bool = True,
                 max_retries: int = 6, backoff: float = 0.5, max_backoff: float = 30.0, timeout: float = 30.0,
                 sleep: Callable[[float], None] | None = None, flush_at_exit: bool = True,
                 max_queue: int = 10_000, flush_interval: float = 1.0, exit_timeout: float = 5.0,
                 max_failed: int = 1_000):
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be at least 1")
        self.url = url.rstrip("/")
        self._api_key = api_key
        self.batch_size = batch_size
        self.compress = compress
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        # With the default sleep the sender waits out a backoff on an event that flush and close
        # cut short; an injected sleep (tests) is called as given, on both paths.
        self.sleep = sleep or time.sleep
        self.max_queue = max_queue
        self.flush_interval = flush_interval
        self.exit_timeout = exit_timeout
        self.max_failed = max_failed
        self.totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "retries": 0, "failed": 0}
        self.errors: list[dict] = []   # per-row rejections the server reported (first max_failed)
        self.failed: list[dict] = []   # events set aside: kind, event, status, reason (first max_failed)
        self.dropped = 0               # events not queued because the queue was full (or closed)
        self.last_problem: str | None = None
        # Queue state, all guarded by _cond.
        self._cond = threading.Condition(threading.Lock())
        self._queues: dict[str, collections.deque] = {k: collections.deque() for k in KINDS}
        self._in_flight = 0
        self._queued_total = {k: 0 for k in KINDS}   # events ever accepted into the queue
        self._done_total = {k: 0 for k in KINDS}     # events delivered or set aside
        self._flush_wanted = False
        self._stopping = False   # close(): drain, then stop
        self._abandon = False    # close() timed out, or exit: stop retrying now
        self._closed = False
        self._wake = threading.Event()  # cuts a backoff short (flush, close)
        self._thread: threading.Thread | None = None
        self._auth_refusal: tuple[int, str] | None = None
        self._drop_reason: str | None = None
        self._warned: set = set()
        _ALL.add(self)
        if flush_at_exit:
            _AT_EXIT.add(self)

    def __repr__(self) -> str:  # never show the key
        return f"Client({self.url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close(self.exit_timeout)

    # -- the caller's side: never blocks, never raises on delivery ------------
    def log_request(self, event: dict) -> None:
        self._add("requests", event)

    def log_feedback(self, event: dict) -> None:
        self._add("feedback", event)

    def _add(self, kind: str, event: dict) -> None:
        if not isinstance(event, dict):
            raise TypeError(f"an event is a dict, not {type(event).__name__}")
        # Serialized now: a snapshot the caller may go on mutating, and a body part ready to join.
        item = json.dumps(event, separators=(",", ":"), default=str)
        drop = None
        with self._cond:
            if self._closed or self._stopping:
                drop = "closed", "an event was logged after close() and dropped"
            elif sum(len(q) for q in self._queues.values()) + self._in_flight >= self.max_queue:
                drop = "full", (f"queue full ({self.max_queue} events); dropping new events until the "
                                f"server takes them (last problem: {self.last_problem or 'none yet'})")
            else:
                q = self._queues[kind]
                q.append(item)
                self._queued_total[kind] += 1
                if len(q) >= self.batch_size:
                    self._cond.notify_all()
                if self._thread is None or not self._thread.is_alive():
                    self._start_sender()
                return
            self.dropped += 1
            self._drop_reason = drop[1]
        self._warn_once(drop[0], f"nlpmon client: {drop[1]}")  # outside the lock: a handler may log again

    def _start_sender(self) -> None:
        """Start (or restart, after a fork) the sender; called with ``_cond`` held."""
        if self._closed or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._run, name="nlpmon-client-sender", daemon=True)
        try:
            self._thread.start()  # returns once the thread runs; it then waits for this lock
        except RuntimeError:  # the interpreter is shutting down: what is queued is reported at exit
            self._thread = None

    def _sender_gone(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    # -- waiting for delivery ------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is delivered or set aside, or ``timeout`` passes.

        Returns True when nothing queued before the call is still waiting. A sender in a backoff
        wait tries again at once.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = dict(self._queued_total)
            if self._reached(target):
                return True
            self._flush_wanted = True
            self._cond.notify_all()
            self._start_sender()
        self._wake.set()
        with self._cond:
            while not self._reached(target):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._sender_gone():
                    return False
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
            return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush (for at most ``timeout`` seconds) and stop the sender; returns whether all was sent.

        Events still queued when the timeout passes stay counted as undelivered (see
        :meth:`undelivered`); events logged after close are dropped and counted.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._abandon = True
            self._cond.notify_all()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(0.1)  # it may be inside a request; as a daemon it never holds up exit
        return done

    def _reached(self, target: dict) -> bool:
        return all(self._done_total[k] >= target[k] for k in KINDS)

    def undelivered(self) -> dict:
        """What has not reached the server: dropped, refused (set aside) and still queued."""
        with self._cond:
            queued = sum(len(q) for q in self._queues.values()) + self._in_flight
            return {"dropped": self.dropped, "refused": self.totals["failed"], "queued": queued}

    # -- the sender thread -----------------------------------------------------
    def _run(self) -> None:
        last = time.monotonic()
        while True:
            with self._cond:
                while True:
                    if self._abandon:
                        return
                    waiting = sum(len(q) for q in self._queues.values())
                    partial = time.monotonic() - last >= self.flush_interval or self._flush_wanted or self._stopping
                    full = any(len(q) >= self.batch_size for q in self._queues.values())
                    if waiting and (full or partial):
                        break
                    if self._stopping and not waiting:
                        return
                    if not waiting:
                        last = time.monotonic()  # the interval counts from the first waiting event
                    self._cond.wait(max(0.001, self.flush_interval - (time.monotonic() - last)))
                # One cycle: per kind, at most what is waiting now, so feedback is never starved.
                self._flush_wanted = False
                self._wake.clear()
                plan = [(k, len(self._queues[k])) for k in KINDS]
            last = time.monotonic()
            for kind, n in plan:
                while n > 0:
                    with self._cond:
                        q = self._queues[kind]
                        size = min(self.batch_size, n, len(q))
                        if size == 0 or (size < self.batch_size and not partial) or self._abandon:
                            break
                        batch = [q.popleft() for _ in range(size)]
                        self._in_flight += size
                    n -= size
                    try:
                        self._deliver(kind, batch)
                    except Exception as exc:  # noqa: BLE001 (a bug here must not stop later events)
                        self._set_aside(kind, batch, None, f"client error: {type(exc).__name__}: {exc}")

    def _deliver(self, kind: str, batch: list[str]) -> None:
        """Send ``batch`` (serialized events) until the server takes it or refuses it; never raises."""
        if self._abandon:
            return
        if self._auth_refusal is not None:
            self._set_aside(kind, batch, *self._auth_refusal)
            return
        url, body, headers = self._request(kind, "[" + ",".join(batch) + "]")
        attempt = 0
        while True:
            status, answer, problem, retry_after = self._attempt(url, body, headers)
            if status is not None and 200 <= status < 300:
                self._record(answer, kind, batch)
                self._finish(kind, len(batch))
                return
            if status is None or status in _RETRY_STATUSES:
                self.last_problem = problem
                if self._abandon:
                    return  # close() timed out or exit: the batch stays counted as queued
                attempt += 1
                with self._cond:
                    self.totals["retries"] += 1
                delay = self._delay(attempt, retry_after)
                if self.sleep is time.sleep:
                    self._wake.wait(delay)
                    self._wake.clear()
                else:
                    self.sleep(delay)
                continue
            if status == 413 and len(batch) > 1:
                mid = len(batch) // 2
                self._deliver(kind, batch[:mid])
                self._deliver(kind, batch[mid:])
                return
            if status in _AUTH_STATUSES:
                self._auth_refusal = (status, problem)
                self._warn_once("auth", f"nlpmon client: the server refused the key (HTTP {status}: {problem}); "
                                        "every event from now on is set aside, not sent")
            else:
                self._warn_once(("refused", status), f"nlpmon client: the server refused a batch of {kind} "
                                                     f"(HTTP {status}: {problem}); set aside in client.failed")
            self._set_aside(kind, batch, status, problem)
            return

    def _record(self, answer: dict, kind: str | None = None, batch: list[str] | None = None) -> None:
        with self._cond:
            for k in ("accepted", "duplicates", "rejected"):
                self.totals[k] += int(answer.get(k, 0) or 0)
            room = self.max_failed - len(self.errors)
            for err in (answer.get("errors") or [])[:max(room, 0)]:
                if batch is not None and isinstance(err, dict):  # a queued batch: say which event
                    err = {"kind": kind, "id": _event_id(kind, batch, err.get("index")), **err}
                self.errors.append(err)

    def _set_aside(self, kind: str, batch: list[str], status: int | None, reason: str) -> None:
        with self._cond:
            self.totals["failed"] += len(batch)
            self.last_problem = f"HTTP {status}: {reason}" if status else reason
            for item in batch[:max(self.max_failed - len(self.failed), 0)]:
                self.failed.append({"kind": kind, "event": json.loads(item), "status": status, "reason": reason})
        self._finish(kind, len(batch))

    def _finish(self, kind: str, n: int) -> None:
        with self._cond:
            self._in_flight -= n
            self._done_total[kind] += n
            self._cond.notify_all()

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    # -- sending now (the synchronous path) ----------------------------------
    def send(self, kind: str, events: Iterable[dict]) -> dict:
        """Send one batch now; returns the server's answer (accepted, duplicates, rejected, errors).

        Retries connection errors, 429, 502, 503 and 504 up to ``max_retries`` times; raises
        :class:`ClientError` on any other refusal or after the last retry.
        """
        url, body, headers = self._request(kind, json.dumps(list(events), separators=(",", ":"), default=str))
        attempt = 0
        while True:
            status, answer, problem, retry_after = self._attempt(url, body, headers)
            if status is not None and 200 <= status < 300:
                self._record(answer)
                return answer
            if status is not None and status not in _RETRY_STATUSES:
                raise ClientError(f"server refused the batch: HTTP {status} {problem}", status, answer)
            attempt += 1
            if attempt > self.max_retries:
                raise ClientError(f"gave up after {self.max_retries} retries: {problem}")
            with self._cond:
                self.totals["retries"] += 1
            self.sleep(self._delay(attempt, retry_after))

    def _request(self, kind: str, text: str) -> tuple[str, bytes, dict]:
        body = text.encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._api_key}",
                   "User-Agent": f"nlpmon-client/{__version__}"}
        if self.compress:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        return f"{self.url}/v1/{kind}", body, headers

    def _attempt(self, url: str, body: bytes, headers: dict) -> tuple[int | None, dict, str, float | None]:
        """One POST: (status or None for no answer, answer body, problem text, Retry-After)."""
        try:
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, _json_or_empty(resp.read()), "", None
        except urllib.error.HTTPError as exc:
            try:
                payload = _json_or_empty(exc.read())
            except (OSError, ValueError):
                payload = {}
            problem = f"{payload.get('message', exc.reason)}"
            if exc.code in _RETRY_STATUSES:
                problem = f"HTTP {exc.code} {problem}"
            return exc.code, payload, problem, _seconds(exc.headers.get("Retry-After") if exc.headers else None)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            return None, {}, f"connection failed: {getattr(exc, 'reason', exc)}", None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** min(attempt - 1, 32)) * (0.5 + random.random() / 2)
        return max(delay, retry_after or 0)


    def _after_fork_in_child(self) -> None:
        """A forked child starts empty: the parent sends what it had queued, and its lock may be held."""
        self._cond = threading.Condition(threading.Lock())
        self._wake = threading.Event()
        self._thread = None
        for q in self._queues.values():
            q.clear()
        self._in_flight = 0
        self._done_total = dict(self._queued_total)


_ALL: weakref.WeakSet[Client] = weakref.WeakSet()
_AT_EXIT: weakref.WeakSet[Client] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [c._after_fork_in_child() for c in list(_ALL)])


# -- interpreter exit ------------------------------------------------------------


@atexit.register
def _flush_at_exit() -> None:
    """Flush every live client at once, each for at most its exit_timeout; one stderr line per loss."""
    clients = list(_AT_EXIT)
    start = time.monotonic()
    for c in clients:  # wake them all first, so they send in parallel
        with c._cond:
            c._stopping = True
            c._flush_wanted = True
            c._cond.notify_all()
        c._wake.set()
    for c in clients:
        try:
            c.close(max(0.0, start + c.exit_timeout - time.monotonic()))
            lost = c.undelivered()
            n = lost["dropped"] + lost["refused"] + lost["queued"]
            if n:
                sys.stderr.write(f"nlpmon client: {n} events not delivered ({lost['dropped']} dropped, "
                                 f"{lost['refused']} refused, {lost['queued']} still queued after "
                                 f"{c.exit_timeout:g} s): {c.last_problem or c._drop_reason}\n")
                sys.stderr.flush()
        except Exception:  # exit must go on whatever happens here
            log.debug("nlpmon client: flush at exit failed", exc_info=True)


def _event_id(kind: str, batch: list[str], index) -> str | None:
    try:
        return json.loads(batch[index]).get("feedback_id" if kind == "feedback" else "request_id")
    except (TypeError, IndexError, ValueError, AttributeError):
        return None


def _json_or_empty(raw: bytes) -> dict:
    try:
        data = json.loads(raw or b"{}")
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
