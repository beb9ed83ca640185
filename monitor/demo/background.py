"""``nlpmon serve --demo``: the demo's history loaded while the pages already answer, then live traffic.

The port opens first; the history (:func:`monitor.demo.load.load`) is stored
and computed in a thread that reports to the pages' progress banner; the
scheduler starts once it is done (its jobs then catch up from the demo's end,
and nothing computes a window twice at once); then the demo keeps sending
normal traffic every minute, so the pages and the jobs have something new to
show for as long as the service runs.

The demo's parameters are kept in the store (``instance_settings``), so a
restart resumes an interrupted load with the same window (the ingest drops
what was already stored, the computations replace what they wrote) and does
not load the history twice. A store that already holds other requests gets
no demo at all.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from typing import Callable

from monitor.demo.load import Sink, demo_key, load, send
from monitor.demo.traffic import generate_live
from monitor.foundation.clock import iso_utc, parse_time
from monitor.foundation.config import Config
from monitor.foundation.memory import release_free_memory
from monitor.foundation.metrics import floor_to
from monitor.foundation.progress import Progress
from monitor.foundation.storage import Store
from monitor.foundation.tables import requests, settings

log = logging.getLogger(__name__)
STATE_KEY = "demo"
LIVE_MAX_GAP = dt.timedelta(hours=6)  # after a long stop, live traffic restarts this far back at most


def state(store: Store) -> dict | None:
    raw = settings.get(store, STATE_KEY)
    return json.loads(raw) if raw else None


def _save(store: Store, value: dict, clock) -> None:
    settings.put(store, STATE_KEY, json.dumps(value), int(clock.now().timestamp() * 1000))


def start(store: Store, config: Config, clock, sink: Sink, progress: Progress, *, days: float, rps: float,
          seed: int, on_loaded: Callable[[], None], stop: threading.Event,
          echo: Callable[[str], None]) -> threading.Thread | None:
    """Decide what the demo does on this store and start it in a thread; returns the thread, or None when
    the store holds someone's own data (``on_loaded`` has then been called already)."""
    progress.title = "demo data"
    current = state(store)
    if current is None:
        if requests.count(store):
            echo("the store already holds requests; no demo data loaded")
            on_loaded()
            return None
        current = {"days": days, "rps": rps, "seed": seed, "end": iso_utc(floor_to(clock.now(), 60)),
                   "loaded": False}
        _save(store, current, clock)
    key = demo_key(store, clock, echo)
    if key:
        echo(key)
    thread = threading.Thread(target=_run, args=(store, config, clock, sink, progress, current, on_loaded, stop, echo),
                              name="demo", daemon=True)
    thread.start()
    return thread


def _run(store: Store, config: Config, clock, sink: Sink, progress: Progress, current: dict,
         on_loaded: Callable[[], None], stop: threading.Event, echo: Callable[[str], None]) -> None:
    end = parse_time(current["end"])
    try:
        if not current["loaded"]:
            echo(f"loading {current['days']:g} days of demo data in the background; the pages show its progress")
            load(sink, config, current["days"], current["rps"], current["seed"], end, store=store, clock=clock,
                 echo=echo, progress=progress, key=False)
            _save(store, {**current, "loaded": True}, clock)
            release_free_memory(store)
            echo("demo data loaded")
    except Exception:
        log.exception("loading the demo data failed; restart to resume it")
        progress.skip_rest()
    finally:
        on_loaded()
    live(sink, current["rps"], current["seed"], clock, stop, resume_point(store, end))


def resume_point(store: Store, end: dt.datetime) -> dt.datetime:
    """Where live traffic goes on: after the newest request stored (a restart), at least the history's end."""
    span = requests.time_span(store)
    if span is None:
        return end
    return max(end, span[1])


def live(sink: Sink, rps: float, seed: int, clock, stop: threading.Event, since: dt.datetime) -> None:
    """Normal traffic up to now, then every minute, until ``stop`` is set."""
    cursor = floor_to(since, 60)
    while not stop.is_set():
        try:
            cursor = live_stretch(sink, cursor, clock.now(), rps, seed)
        except Exception:  # the store is down: the same stretch is sent again next minute
            log.warning("demo live traffic could not be sent; retrying", exc_info=True)
        stop.wait(timeout=max(1.0, (cursor + dt.timedelta(seconds=61) - clock.now()).total_seconds()))


def live_stretch(sink: Sink, cursor: dt.datetime, now: dt.datetime, rps: float, seed: int) -> dt.datetime:
    """Send the whole minutes in [cursor, now); returns where the next stretch starts."""
    upto = floor_to(now, 60)
    cursor = max(cursor, upto - LIVE_MAX_GAP)
    if upto > cursor:
        send(sink, generate_live(cursor, upto, rps, seed), 0)
    return max(cursor, upto)
