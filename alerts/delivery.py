"""The notification outbox: a durable queue between deciding to notify and sending.

A decision is written to ``notification_outbox`` (ReplacingMergeTree by
``updated_at``) before anything is sent, under an id that is deterministic per
decision, so deciding again after a crash is still one row and one delivery.
:meth:`Outbox.deliver_due` sends what is due and records the outcome as a new
version of the row:

* delivered: ``sent`` with ``sent_at``;
* a retryable failure (HTTP 429/5xx, SMTP 4xx, timeouts, refused connections):
  stays ``pending`` with ``next_attempt_at = now + min(backoff_initial * 2**attempts,
  backoff_max)``, or ``failed`` once the row is older than ``give_up_after``;
* anything else (HTTP 4xx, SMTP 5xx, an unknown receiver): ``failed`` at once;
* a newer notification for the same group and receiver exists: ``superseded``, not sent.

Of the due rows of one group and receiver, only the newest is sent (the others
are superseded), so one run never has two sends of a group to a receiver in
flight and a newer notification is never overtaken by an older one.

Sending is concurrent, on a thread pool of ``alerts.delivery.concurrency``
workers (16) created for the run, so a storm of new groups is not a queue of
round trips and a slow receiver does not hold up the others:

* a receiver's first send of the run goes alone; its other rows follow once it
  has answered (any answer, 5xx included);
* a receiver that does not answer (a timeout, a refused or reset connection)
  has its rows not yet started left as they are (pending, due, not attempted)
  for the next run: a receiver that hangs costs one timeout a run, and one
  worker if it hangs from its first send;
* the next free worker goes to the receiver with the fewest sends in flight
  (then the oldest row), and a receiver has at most ``concurrency // 2`` in
  flight (8) while another has rows waiting, so a slow receiver with many rows
  leaves at least half the pool to the others; once it is the only one with
  rows left, it may use the whole pool;
* no send starts once the run has spent ``jobs.schedule.alerts`` (real time, not the
  injected clock); what is left is due and goes out with the next run.

:meth:`deliver_due` returns when its sends are done, so ``AlertEngine.run``
waits for delivery: at most ``jobs.schedule.alerts`` plus the longest receiver
timeout, and one timeout when a receiver hangs (the others' rows are sent
meanwhile). The workers only send; the calling thread writes the outcomes
that completed together in one insert (after starting the next sends, so
writes overlap sends), which keeps the store to one thread per run: chDB
serializes calls on its one client anyway, 5-10 ms an insert, so one insert
per outcome, not the sends, would bound a storm to a fast receiver.

Delivery is at least once: a crash after a send and before its row is written
sends again on the next run. A receiver failure never raises; it is one warning
line in the log and ``last_error`` in the row. Store errors do raise, once the
sends in flight have finished (their outcomes unrecorded: sent again next run).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import replace
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from alerts import notify
from alerts.model import Notice
from alerts.notify import AlertView, DeliveryError, Notification, build_payload, send
from monitor.foundation.tables import notification_outbox
from monitor.foundation.tables.notification_outbox import OutboxRow

__all__ = ["Outbox"]

log = logging.getLogger(__name__)

_TICK = dt.timedelta(milliseconds=1)  # the column precision: a new version is at least this much later
_ERROR_CHARS = 1000


class Outbox:
    def __init__(self, store, config, clock):
        self.store = store
        self.config = config
        self.clock = clock
        self.receivers = notify.receivers(config)
        # An existence check and its insert do not interleave; one delivery run at a time in this
        # process, so a row is not sent twice concurrently. Separate, so sending never blocks enqueueing.
        self._enqueue_lock = threading.Lock()
        self._deliver_lock = threading.Lock()

    # -- config ---------------------------------------------------------------
    def _receiver(self, name: str) -> notify.Receiver | None:
        return self.receivers.get(name)

    @property
    def _delivery(self):
        return self.config.alerts.delivery

    # -- writing --------------------------------------------------------------
    def enqueue(self, id: str, group_key: str, receiver: str, alert_status: str, payload: dict) -> bool:
        """Queue a notification; False (and nothing written) when a row with this id exists already."""
        return bool(self.enqueue_many([Notice(id, group_key, receiver, alert_status, payload)]))

    def enqueue_many(self, notices: list[Notice]) -> list[str]:
        """Queue notices in one insert, skipping ids already queued (a decision made again after a crash);
        returns the ids written."""
        if not notices:
            return []
        with self._enqueue_lock:
            known = notification_outbox.existing(self.store, [n.id for n in notices])
            now = self.clock.now()
            rows = []
            for n in notices:
                if n.id in known:
                    continue
                known.add(n.id)
                rcv = self._receiver(n.receiver)
                kind = rcv.kind if rcv is not None else ""
                stored = notify.stored(kind, n.payload)  # without what the kind keeps out of storage (secrets)
                body = json.dumps(stored, ensure_ascii=False, separators=(",", ":"), default=str)
                rows.append(OutboxRow(n.id, n.group_key, n.receiver, kind, "pending", n.status, body, now, 0, now, "",
                                      None, now))
            self._write_all(rows)
        return [r.id for r in rows]

    def _write(self, row: OutboxRow) -> None:
        notification_outbox.write(self.store, row)

    def _write_all(self, rows: list[OutboxRow]) -> None:
        """The outcomes of the sends that completed together, in one insert."""
        notification_outbox.write_many(self.store, rows)

    # -- reading --------------------------------------------------------------
    def rows(self, status: str | None = None) -> list[OutboxRow]:
        """Current version of every row (oldest first), optionally of one status."""
        return notification_outbox.rows(self.store, status)

    def get(self, id: str) -> OutboxRow | None:
        return notification_outbox.get(self.store, id)

    # -- delivering -----------------------------------------------------------
    def deliver_due(self, now: dt.datetime | None = None) -> list[OutboxRow]:
        """Send every pending row whose next attempt is due; the rows as written after the attempt (oldest first).

        A pending row with a newer row for the same group and receiver is not sent
        but marked ``superseded``: a notification carries the whole group's state, so
        a late retry of an older one would undo the newer (a stale trigger after a resolve).
        Rows left for the next run (see the module docstring) are not written nor returned.
        """
        with self._deliver_lock:
            now = now if now is not None else self.clock.now()
            due = notification_outbox.due(self.store, now)
            if not due:
                return []
            latest = notification_outbox.newest_created(self.store, sorted({row.group_key for row in due}))
            last_due = {(row.group_key, row.receiver): row.id for row in due}  # oldest first: the newest wins
            out: dict[str, OutboxRow] = {}
            to_send = []
            for row in due:
                key = (row.group_key, row.receiver)
                newest = latest.get(key)
                if last_due[key] != row.id or (newest is not None and newest > row.created_at):
                    out[row.id] = self._supersede(row, now)
                else:
                    to_send.append(row)
            out.update(self._send_all(to_send, now))
            return [out[row.id] for row in due if row.id in out]

    def _send_all(self, rows: list[OutboxRow], now: dt.datetime) -> dict[str, OutboxRow]:
        """Attempt ``rows`` (oldest first) on the pool; id -> the row as written. See the module docstring."""
        if not rows:
            return {}
        workers = self._delivery.concurrency
        share = max(1, workers // 2)  # per receiver, while another receiver has rows waiting
        deadline = time.monotonic() + self.config.jobs.schedule.alerts.total_seconds()
        queues: dict[str, deque] = {}
        for i, row in enumerate(rows):
            queues.setdefault(row.receiver, deque()).append((i, row))
        busy: Counter = Counter()
        answered: set[str] = set()  # receivers that answered a send in this run
        running: dict = {}  # future -> row
        left: dict[str, tuple[int, str]] = {}  # receiver -> (rows left for the next run, why)
        out: dict[str, OutboxRow] = {}

        with ThreadPoolExecutor(max_workers=min(workers, len(rows)), thread_name_prefix="outbox") as pool:
            def start() -> None:
                while len(running) < workers and time.monotonic() < deadline:
                    waiting = [r for r, q in queues.items() if q]
                    ready = [r for r in waiting if busy[r] < (
                        1 if r not in answered else workers if len(waiting) == 1 else share)]
                    if not ready:
                        return
                    r = min(ready, key=lambda r: (busy[r], queues[r][0][0]))  # least busy, then oldest row
                    _, row = queues[r].popleft()
                    busy[r] += 1
                    running[pool.submit(self._attempt, row, now)] = row

            start()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                finished = []
                for future in done:
                    row = running.pop(future)
                    busy[row.receiver] -= 1
                    new, unanswered = future.result()
                    if not unanswered:
                        answered.add(row.receiver)
                    elif queues[row.receiver]:
                        left[row.receiver] = (len(queues[row.receiver]), new.last_error)
                        queues[row.receiver].clear()
                    finished.append(new)
                start()  # the next sends go out while this thread writes
                self._write_all(finished)
                for new in finished:
                    self._log(new, now)
                    out[new.id] = new

        for receiver, (n, error) in left.items():
            log.warning("receiver %s did not answer (%s); %d notification%s to it left for the next run", receiver,
                        error, n, "" if n == 1 else "s")
        unstarted = sum(len(q) for q in queues.values())
        if unstarted:
            log.warning("%d due notification%s left for the next run: this delivery run has spent its "
                        "jobs.schedule.alerts (%gs)", unstarted, "" if unstarted == 1 else "s",
                        self.config.jobs.schedule.alerts.total_seconds())
        return out

    def _supersede(self, row: OutboxRow, now: dt.datetime) -> OutboxRow:
        new = replace(row, status="superseded", updated_at=max(now, row.updated_at + _TICK),
                      last_error=("superseded by a newer notification for this group"
                                  + (f" (last error: {row.last_error})" if row.last_error else ""))[:_ERROR_CHARS])
        self._write(new)
        log.info("notification %s to %s superseded by a newer one for its group", row.id, row.receiver)
        return new

    def _attempt(self, row: OutboxRow, now: dt.datetime) -> tuple[OutboxRow, bool]:
        """One send, on a pool worker: the row's next version (not written) and whether the receiver did not answer."""
        new = replace(row, attempts=row.attempts + 1,
                      updated_at=max(now, row.updated_at + _TICK))  # strictly later than the version it replaces
        rcv = self._receiver(row.receiver)
        if rcv is None:
            return self._fail(new, f"receiver {row.receiver!r} is not configured (alerts.receivers)"), False
        if row.kind and rcv.kind != row.kind:
            return self._fail(new, f"receiver {row.receiver!r} is now a {rcv.kind} receiver; "
                                   f"this notification was built for {row.kind}"), False
        try:
            payload = json.loads(row.payload)
            send(rcv.kind, rcv.target, payload, rcv.target.timeout.total_seconds())
        except DeliveryError as exc:
            error = str(exc)[:_ERROR_CHARS]
            if not exc.retryable:
                return self._fail(new, error), False
            unanswered = exc.status is None  # a timeout or a connection that failed, not an answer
            age = now - row.created_at
            if age > self._delivery.give_up_after:
                return self._fail(new, f"gave up after {new.attempts} attempts: {error}"), unanswered
            delay = min(self._delivery.backoff_initial * (2 ** row.attempts), self._delivery.backoff_max)
            return replace(new, next_attempt_at=now + delay, last_error=error), unanswered
        except Exception as exc:  # noqa: BLE001 - a bad stored payload or a bug in a sender: fail the row, not the run
            return self._fail(new, f"{type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:_ERROR_CHARS] if str(exc) else ''}"), False
        return replace(new, status="sent", sent_at=now, last_error=""), False

    @staticmethod
    def _fail(new: OutboxRow, error: str) -> OutboxRow:
        return replace(new, status="failed", last_error=error)

    def _log(self, new: OutboxRow, now: dt.datetime) -> None:
        """The log line for an attempt's outcome, once it is written."""
        if new.status == "sent":
            rcv = self._receiver(new.receiver)
            log.info("notification %s sent to %s (%s, attempt %d)", new.id, new.receiver,
                     rcv.kind if rcv is not None else new.kind, new.attempts)
        elif new.status == "pending":
            log.warning("notification %s to %s failed (attempt %d), retrying in %gs: %s", new.id, new.receiver,
                        new.attempts, (new.next_attempt_at - now).total_seconds(), new.last_error)
        else:
            log.warning("notification %s to %s failed for good after %d attempt%s: %s", new.id, new.receiver,
                        new.attempts, "" if new.attempts == 1 else "s", new.last_error)

    # -- trying a receiver out ------------------------------------------------
    def test_notification(self, receiver_name: str) -> None:
        """Send a synthetic notification to one receiver now (``nlpmon alerts test-receiver NAME``).

        Nothing is queued; raises :class:`DeliveryError` when it was not delivered.
        """
        rcv = self._receiver(receiver_name)
        if rcv is None:
            names = ", ".join(self.receivers) or "none"
            raise DeliveryError(f"no receiver named {receiver_name!r} (configured: {names})", retryable=False)
        now = self.clock.now()
        labels = {"alertname": "NlpmonTestNotification", "severity": "info", "receiver": rcv.name}
        alert = AlertView(
            fingerprint="test-" + rcv.name, status="firing", labels=labels,
            annotations={"summary": f"Test notification from nlpmon to receiver {rcv.name}",
                         "description": "Sent by `nlpmon alerts test-receiver`; no alert is firing."},
            starts_at=now, ends_at=None, value=None)
        n = Notification(receiver=rcv.name, group_key=f"test/{rcv.name}/{now.isoformat()}", status="firing",
                         group_labels={"alertname": labels["alertname"]}, alerts=[alert],
                         external_url=self.config.alerts.external_url, now=now)
        send(rcv.kind, rcv.target, build_payload(rcv.kind, rcv.target, n), rcv.target.timeout.total_seconds())

