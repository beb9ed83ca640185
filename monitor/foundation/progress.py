"""Progress of long background work in this process (the demo's load), as the pages show it.

Steps are planned up front so a page can say what is still to come, not only
what runs now. Each step names the page areas it feeds (``overview``,
``metrics``, ``hallucination``, ``alerts``, ``drift``): a page whose area is still
pending shows the banner and marks the figures that are not computed yet
instead of showing them half done.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

AREAS = ("overview", "metrics", "hallucination", "alerts", "drift")


@dataclass
class Step:
    name: str
    label: str
    areas: tuple[str, ...]
    total: int = 0
    done: int = 0
    state: str = "waiting"        # waiting | running | done | failed
    started: float | None = None  # monotonic seconds
    finished: float | None = None
    error: str = ""

    def left_seconds(self, now: float) -> float | None:
        """For a running step with some work done: its pace so far applied to what is left."""
        if self.state != "running" or not self.done or self.started is None or not self.total:
            return None
        return (now - self.started) / self.done * max(0, self.total - self.done)


@dataclass
class Progress:
    title: str = "background work"
    steps: dict[str, Step] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def plan(self, steps: list[tuple[str, str, tuple[str, ...]]]) -> None:
        """(name, label, areas) of every step, in the order they will run."""
        unknown = {a for _, _, areas in steps for a in areas} - set(AREAS)
        if unknown:
            raise ValueError(f"unknown page areas {sorted(unknown)}; known: {AREAS}")
        with self._lock:
            self.steps = {name: Step(name, label, tuple(areas)) for name, label, areas in steps}

    def start(self, name: str, total: int = 0) -> None:
        with self._lock:
            s = self.steps[name]
            s.state, s.total, s.done, s.started = "running", total, 0, time.monotonic()

    def advance(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.steps[name].done += n

    def finish(self, name: str) -> None:
        with self._lock:
            s = self.steps[name]
            s.state, s.finished = "done", time.monotonic()
            s.done = max(s.done, s.total)

    def fail(self, name: str, error: str) -> None:
        with self._lock:
            s = self.steps[name]
            s.state, s.finished, s.error = "failed", time.monotonic(), error[:300]

    def skip_rest(self) -> None:
        """Steps that never ran (the work stopped early) stop counting as pending."""
        with self._lock:
            for s in self.steps.values():
                if s.state in ("waiting", "running"):
                    s.state, s.error = "failed", "not run"

    @property
    def active(self) -> bool:
        return any(s.state in ("waiting", "running") for s in self.steps.values())

    def pending(self, area: str) -> bool:
        """Is a step that feeds this page area still to finish?"""
        return any(area in s.areas and s.state in ("waiting", "running") for s in self.steps.values())

    def snapshot(self) -> dict:
        """What a page shows: the steps left, the running one's count and its time left, failures."""
        now = time.monotonic()
        with self._lock:
            steps = list(self.steps.values())
        left = [{"name": s.name, "label": s.label, "state": s.state, "done": s.done, "total": s.total,
                 "left_seconds": s.left_seconds(now)} for s in steps if s.state in ("waiting", "running")]
        failed = [{"name": s.name, "label": s.label, "error": s.error} for s in steps if s.state == "failed"]
        return {"title": self.title, "active": bool(left), "left": left, "failed": failed,
                "done": sum(s.state == "done" for s in steps), "steps": len(steps)}
