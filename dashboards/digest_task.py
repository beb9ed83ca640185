"""``digests``: each configured digest sent at its schedule, once per period, through the alert outbox.

Every run (``jobs.schedule.digests``, a minute) finds each digest's latest scheduled time at or before now; while
now is within the period after it (so a schedule missed while the process was down is still sent when it
starts again, and one older than that is not), every receiver without a notification for that period gets
one: the outbox id is fixed by digest, period start and receiver, so reruns, restarts and several schedulers
queue it once and the outbox delivers it once (at least once across a crash mid-send, as every
notification). The alert engine's runs deliver the outbox; with alerts disabled, this task delivers it.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid

from apscheduler.triggers.cron import CronTrigger

from alerts.delivery import Outbox
from dashboards import digest
from monitor.foundation.config import DigestConfig
from monitor.foundation.tables import job_runs, notification_outbox
from monitor.foundation.tables.job_runs import RunResult

log = logging.getLogger(__name__)
_MAX_FIRES = 10_000  # schedule times walked from a period back; a cron firing more often is not a digest


def latest_fire(cfg: DigestConfig, now: dt.datetime) -> dt.datetime | None:
    """The digest's latest scheduled time at or before ``now`` within one period back, or None."""
    trigger = CronTrigger.from_crontab(cfg.schedule, timezone="UTC")
    t = trigger.get_next_fire_time(None, now - cfg.span)
    last = None
    for _ in range(_MAX_FIRES):
        if t is None or t > now:
            break
        last = t
        t = trigger.get_next_fire_time(last, last + dt.timedelta(seconds=1))
    return last.astimezone(dt.timezone.utc) if last is not None else None


def notice_id(name: str, start: dt.datetime, receiver: str) -> str:
    return f"digest-{name}-{start:%Y%m%dT%H%M}-{receiver}"


class DigestTask:
    name = "digests"
    description = "digests sent at their schedule, once per period (KPIs, movers, incidents, releases, cost)"
    show_progress = False
    start_offset = dt.timedelta(seconds=20)

    def __init__(self, store, config, clock, interval: dt.timedelta, outbox: Outbox | None = None):
        self.store, self.config, self.clock, self.interval = store, config, clock, interval
        self.outbox = outbox or Outbox(store, config, clock)

    def run(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> RunResult:
        now = now or self.clock.now()
        result = RunResult(self.name, now, now, run_id=uuid.uuid4())
        with job_runs.recorded(self.store, result, self.clock.now()):
            for cfg in self.config.digests:
                fired = latest_fire(cfg, now)
                if fired is None or now >= fired + cfg.span:
                    continue
                result.rows += self.send(cfg, fired)
            if result.rows and not self.config.alerts.enabled:
                self.outbox.deliver_due(now)  # no alert engine to deliver the outbox: this task does
        return result

    def send(self, cfg: DigestConfig, fired: dt.datetime, force: bool = False) -> int:
        """Queue the digest of the period ``fired`` ends for each receiver that has not had it (all of them,
        under new ids, with ``force``); the number queued."""
        start, end = digest.period_of(cfg, fired)
        suffix = f"-{uuid.uuid4().hex[:8]}" if force else ""
        ids = {r: notice_id(cfg.name, start, r) + suffix for r in cfg.receivers}
        queued_before = notification_outbox.existing(self.store, list(ids.values()))
        waiting = [r for r in cfg.receivers if ids[r] not in queued_before]
        if not waiting:
            return 0
        d = digest.build(self.store, self.config, cfg, start, end, fired)
        queued = []
        for name in waiting:
            receiver = self.outbox.receivers.get(name)
            if receiver is None:
                log.warning("digest %s: receiver %s is not configured", cfg.name, name)
                continue
            if self.outbox.enqueue(ids[name], f"digest:{cfg.name}:{start:%Y%m%dT%H%M}", name, "digest",
                                   digest.payload(receiver.kind, receiver.target, d)):
                queued.append(name)
        log.info("digest %s for %s to %s queued for %s", cfg.name, start.isoformat(), end.isoformat(),
                 ", ".join(queued) or "nobody (already queued)")
        return len(queued)
