"""Python client for the ingest API: batching, gzip, retries with backoff, flush on exit.

    client = Client("http://127.0.0.1:8080", api_key)
    client.log_request({...})      # buffered, sent in batches
    client.log_feedback({...})
    client.flush()                 # also runs at interpreter exit

A batch is retried on connection errors, 429, 502, 503 and 504 (honouring
Retry-After) with exponential backoff and jitter. A 4xx other than 429 is the
caller's mistake, and a 500 is nlpmon saying the store rejected its own query
(a bug, not an outage): both raise :class:`ClientError` at once, because the
same batch would fail again. Events are only dropped from the buffer once the
server has answered 2xx, so a retry never loses them and the server's
request_id de-duplication means it never doubles them.
"""
from __future__ import annotations

import atexit
import gzip
import json
import random
import threading
import time
import urllib.error
import urllib.request
import weakref
from typing import Callable, Iterable

from monitor import __version__


class ClientError(RuntimeError):
    """The server refused a batch (4xx) or stayed unavailable through every retry."""

    def __init__(self, message: str, status: int | None = None, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


# 500 is not here: nlpmon answers it for a bug, which a resend would meet again.
_RETRY_STATUSES = {429, 502, 503, 504}


class Client:
    def __init__(self, url: str, api_key: str, *, batch_size: int = 500, compress: bool = True,
                 max_retries: int = 6, backoff: float = 0.5, max_backoff: float = 30.0, timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, flush_at_exit: bool = True):
        self.url = url.rstrip("/")
        self._api_key = api_key
        self.batch_size = batch_size
        self.compress = compress
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.sleep = sleep
        self._buffers: dict[str, list] = {"requests": [], "feedback": []}
        self._lock = threading.RLock()
        self.totals = {"accepted": 0, "duplicates": 0, "rejected": 0, "retries": 0}
        self.errors: list[dict] = []
        if flush_at_exit:
            ref = weakref.ref(self)
            atexit.register(lambda: (c := ref()) is not None and c.flush())

    def __repr__(self) -> str:  # never show the key
        return f"Client({self.url!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()

    # -- buffering ------------------------------------------------------------
    def log_request(self, event: dict) -> None:
        self._add("requests", event)

    def log_feedback(self, event: dict) -> None:
        self._add("feedback", event)

    def _add(self, kind: str, event: dict) -> None:
        with self._lock:
            buf = self._buffers[kind]
            buf.append(event)
            if len(buf) >= self.batch_size:
                self._flush_kind(kind)

    def flush(self) -> None:
        with self._lock:
            # Requests first: feedback refers to them.
            for kind in ("requests", "feedback"):
                self._flush_kind(kind)

    def _flush_kind(self, kind: str) -> None:
        buf = self._buffers[kind]
        while buf:
            batch = buf[: self.batch_size]
            self.send(kind, batch)
            del buf[: len(batch)]

    # -- sending --------------------------------------------------------------
    def send(self, kind: str, events: Iterable[dict]) -> dict:
        """Send one batch now; returns the server's answer (accepted, duplicates, rejected, errors)."""
        body = json.dumps(list(events), separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._api_key}",
                   "User-Agent": f"nlpmon-client/{__version__}"}
        if self.compress:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        result = self._post(f"{self.url}/v1/{kind}", body, headers)
        for k in ("accepted", "duplicates", "rejected"):
            self.totals[k] += int(result.get(k, 0))
        self.errors.extend(result.get("errors", []))
        return result

    def _post(self, url: str, body: bytes, headers: dict) -> dict:
        attempt = 0
        while True:
            retry_after = None
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                payload = _json_or_empty(exc.read())
                if exc.code not in _RETRY_STATUSES:
                    raise ClientError(f"server refused the batch: HTTP {exc.code} "
                                      f"{payload.get('message', exc.reason)}", exc.code, payload) from None
                problem = f"HTTP {exc.code} {payload.get('message', exc.reason)}"
                retry_after = _seconds(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                problem = f"connection failed: {getattr(exc, 'reason', exc)}"
            attempt += 1
            if attempt > self.max_retries:
                raise ClientError(f"gave up after {self.max_retries} retries: {problem}")
            self.totals["retries"] += 1
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            self.sleep(max(delay, retry_after or 0))


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
