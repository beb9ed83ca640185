"""Builders and a loopback server shared by the tests."""
from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import uuid

from werkzeug.serving import make_server

from monitor.foundation.clock import ManualClock


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


class FineClock(ManualClock):
    """A manual clock with a real clock's microseconds: every time it is set or moved it lands a few
    hundred microseconds past where it was told, as two readings of a real clock do.

    A clock of whole seconds hid a review queue that compared stored milliseconds with microseconds;
    the review, silence, lease, replica and alert tests run on this one (tests/conftest.py).
    """

    def __init__(self, start):
        super().__init__(start)
        self._step = 0
        self.set(self.now())

    def _fraction(self) -> dt.timedelta:
        self._step += 1
        return dt.timedelta(microseconds=(self._step * 7919 + 345) % 997 + 1)  # 1..997 µs, never whole ms

    def advance(self, delta):
        if not isinstance(delta, dt.timedelta):
            delta = dt.timedelta(seconds=delta)
        return super().advance(delta + self._fraction())

    def set(self, ts: dt.datetime) -> None:
        super().set(ts + self._fraction())


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


def browser_session(browser, url: str, key: str, viewport: dict) -> dict:
    """Sign in once through the login page in Chromium; the context's storage state (the session cookie) for
    each test's page to start from, in a context of its own.

    Signing in lands on the overview, the page that takes longest to draw: done for every test, it cost
    each browser test about as long as the test itself. It must draw without console errors, as it did
    when every test signed in.
    """
    ctx = browser.new_context(viewport=viewport)
    try:
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(url + "/login")
        pg.fill("#api_key", key)
        pg.click("button[type=submit]")
        pg.wait_for_url(url + "/")
        assert errors == [], errors
        return ctx.storage_state()
    finally:
        ctx.close()


@contextlib.contextmanager
def app_of_its_own(chdb_dir, clock, prefix: str, **sections):
    """An app on a migrated database of its own in the session's chDB directory, for a module's tests to share
    (named ``t_<prefix>_...``, apart from the per-test ones); ``sections`` override the config. Dropped after."""
    from monitor.app import create_app
    from monitor.foundation.config import load_config
    from monitor.foundation.storage import Store
    from tests.conftest import TEST_RETENTION, upgrade_fast
    cfg = load_config(env={}, overrides={
        "clickhouse": {"url": f"chdb://{chdb_dir}", "database": f"t_{prefix}_{uuid.uuid4().hex[:12]}"},
        "retention": TEST_RETENTION, **sections})
    store = Store.from_config(cfg)
    try:
        upgrade_fast(store, cfg)
        yield create_app(cfg, store, clock)
    finally:
        store.command(f"DROP DATABASE IF EXISTS `{cfg.clickhouse.database}`")
        store.close()


def recent_friday_noon() -> dt.datetime:
    """The latest Friday 12:00 UTC at least a day before the real date: the end of a demo window that falls
    on the same weekday and hour whenever the suite runs (the demo's load curve, incident positions and
    random streams are the same, a whole number of weeks apart), and recent enough that the engine's TTL
    keeps its texts (it blanks those older than retention.text_days, by the real date, as they are inserted)."""
    t = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    return t - dt.timedelta(days=(t.weekday() - 4) % 7)
