"""Builders and a loopback server shared by the tests."""
from __future__ import annotations

import socket
import threading

from werkzeug.serving import make_server


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def request_event(i: int | str = 1, **over) -> dict:
    ev = {
        "request_id": f"req-{i}", "ts": "2026-11-24T09:30:00Z", "service": "support-bot", "feature": "answer",
        "model": "gpt-4o-mini", "provider": "openai", "prompt_version": "v3", "status": "ok",
        "latency_ms": 850.0, "ttft_ms": 210.0, "input_tokens": 1200, "output_tokens": 180,
        "input_text": "How do I change my billing address?", "output_text": "Open Settings, then Billing.",
    }
    ev.update(over)
    return ev


def feedback_event(i: int | str = 1, **over) -> dict:
    ev = {"request_id": f"req-{i}", "ts": "2026-11-24T09:31:00Z", "kind": "thumbs", "value": 1}
    ev.update(over)
    return ev


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """A loopback server's ``serve_forever`` in a daemon thread, started and stopped by ``with``."""

    server = None  # set by the subclass before __enter__

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class LiveServer(ServerThread):
    """The app on a real loopback HTTP server, in a thread."""

    def __init__(self, app, port: int = 0):
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
