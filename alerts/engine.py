"""The ``alerts`` job: evaluate the rules, decide notifications, deliver the outbox, every ``jobs.schedule.alerts``."""
from __future__ import annotations

import datetime as dt
import uuid

from alerts.delivery import Outbox
from alerts.dispatch import Dispatcher
from alerts.evaluator import Evaluator
from alerts.reads import ReplayPoints
from alerts.rules import load_rules
from monitor.foundation.tables import alert_history, alert_state, job_runs
from monitor.foundation.tables.job_runs import RunResult


# Replayed times this close together are one stretch, whose metric points are read once (ReplayPoints).
REPLAY_GAP = dt.timedelta(hours=1)


class AlertEngine:
    name = "alerts"
    description = "evaluate alert rules, route and group notifications, deliver them through the outbox"
    show_progress = False
    # Started a few seconds after the jobs that write metric_points (they tick together otherwise, and
    # a rule on their points would read just before they write; live rules read the rollups and don't care).
    start_offset = dt.timedelta(seconds=5)

    def __init__(self, store, config, clock, job_intervals: dict | None = None):
        self.store = store
        self.config = config
        self.clock = clock
        self.interval = config.jobs.schedule.alerts
        self.evaluator = Evaluator(store, config, clock, load_rules(config), job_intervals)
        self.outbox = Outbox(store, config, clock)
        self.dispatcher = Dispatcher(store, config, clock, self.outbox)

    @property
    def rules(self) -> list:
        return self.evaluator.rules

    @rules.setter
    def rules(self, rules: list) -> None:
        self.evaluator.rules = rules

    def run(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> RunResult:
        now = now or self.clock.now()
        result = RunResult(self.name, now, now, run_id=uuid.uuid4())
        with job_runs.recorded(self.store, result, now):  # a killed evaluation leaves a trace
            transitions = self.evaluator.evaluate(now, silenced=self.dispatcher.silenced(now))
            enqueued = self.dispatcher.run(now)
            # The clock, not the run's start: what this run enqueued is due now, not on the next tick.
            delivered = self.outbox.deliver_due()
            result.rows = len(transitions)
            result.details = {"transitions": len(transitions), "enqueued": len(enqueued), "delivered": len(delivered)}
        return result

    def replay(self, times, on_step=None) -> int:
        """Evaluate the rules at past times, oldest first, without notifying anyone.

        For ``nlpmon demo``: its incidents happened before the service started, so their
        alerts are rebuilt into alert_state and alert_history as the engine would have
        written them. Returns the number of transitions.

        A replay rebuilds the stretch it covers: what an earlier replay of it left there (one cut off by
        a kill, whose demo load then resumes) is removed first, so each transition is written once and
        the state is evaluated from the start, not from where the cut left it.
        """
        times = list(times)
        if times:
            alert_history.remove_between(self.store, times[0], times[-1])
            alert_state.remove_updated_until(self.store, times[-1])
        n, points = 0, None
        for i, t in enumerate(times):
            if points is None or t > points.last:  # a stretch: times each within REPLAY_GAP of the next
                end = i
                while end + 1 < len(times) and times[end + 1] - times[end] <= REPLAY_GAP:
                    end += 1
                points = ReplayPoints(self.store, times[end])
            n += len(self.evaluator.evaluate(t, silenced=self.dispatcher.silenced(t), points=points))
            if on_step:
                on_step()
        return n
