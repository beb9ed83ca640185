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

Delivery is at least once: a crash after a send and before its row is written
sends again on the next run. A receiver failure never raises; it is one warning
line in the log and ``last_error`` in the row. Store errors do raise.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading

from alerts import notify
from alerts.notify import AlertView, DeliveryError, Notification, build_payload, send
from monitor.foundation.clock import utc
from monitor.foundation.tables import notification_outbox

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
        rcv = self._receiver(receiver)
        kind = rcv.kind if rcv is not None else ""
        payload = notify.stored(kind, payload)  # without what the kind keeps out of storage (secrets)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
        with self._enqueue_lock:
            if notification_outbox.exists(self.store, id):
                return False
            now = self.clock.now()
            self._write({"id": id, "group_key": group_key, "receiver": receiver, "kind": kind, "status": "pending",
                         "alert_status": alert_status, "payload": body, "created_at": now, "attempts": 0,
                         "next_attempt_at": now, "last_error": "", "sent_at": None, "updated_at": now})
        return True

    def _write(self, row: dict) -> None:
        notification_outbox.write(self.store, row)

    # -- reading --------------------------------------------------------------
    def rows(self, status: str | None = None) -> list[dict]:
        """Current version of every row (oldest first), optionally of one status."""
        return notification_outbox.rows(self.store, status)

    def get(self, id: str) -> dict | None:
        return notification_outbox.get(self.store, id)

    # -- delivering -----------------------------------------------------------
    def deliver_due(self, now: dt.datetime | None = None) -> list[dict]:
        """Send every pending row whose next attempt is due; the rows as written after the attempt.

        A pending row with a newer row for the same group and receiver is not sent
        but marked ``superseded``: a notification carries the whole group's state, so
        a late retry of an older one would undo the newer (a stale trigger after a resolve).
        """
        with self._deliver_lock:
            now = utc(now) if now is not None else self.clock.now()
            due = notification_outbox.due(self.store, now)
            if not due:
                return []
            latest = notification_outbox.newest_created(self.store, sorted({row["group_key"] for row in due}))
            out = []
            for row in due:
                newest = latest.get((row["group_key"], row["receiver"]))
                if newest is not None and newest > row["created_at"]:
                    out.append(self._supersede(row, now))
                else:
                    out.append(self._attempt(row, now))
            return out

    def _supersede(self, row: dict, now: dt.datetime) -> dict:
        new = dict(row, status="superseded", updated_at=max(now, row["updated_at"] + _TICK),
                   last_error=("superseded by a newer notification for this group"
                               + (f" (last error: {row['last_error']})" if row["last_error"] else ""))[:_ERROR_CHARS])
        self._write(new)
        log.info("notification %s to %s superseded by a newer one for its group", row["id"], row["receiver"])
        return self._public(new)

    def _attempt(self, row: dict, now: dt.datetime) -> dict:
        new = dict(row, attempts=row["attempts"] + 1,
                   updated_at=max(now, row["updated_at"] + _TICK))  # strictly later than the version it replaces
        rcv = self._receiver(row["receiver"])
        if rcv is None:
            return self._fail(new, f"receiver {row['receiver']!r} is not configured (alerts.receivers)")
        if row["kind"] and rcv.kind != row["kind"]:
            return self._fail(new, f"receiver {row['receiver']!r} is now a {rcv.kind} receiver; "
                                   f"this notification was built for {row['kind']}")
        try:
            payload = json.loads(row["payload"])
            send(rcv.kind, rcv.target, payload, rcv.target.timeout.total_seconds())
        except DeliveryError as exc:
            error = str(exc)[:_ERROR_CHARS]
            if not exc.retryable:
                return self._fail(new, error)
            age = now - row["created_at"]
            if age > self._delivery.give_up_after:
                return self._fail(new, f"gave up after {new['attempts']} attempts: {error}")
            delay = min(self._delivery.backoff_initial * (2 ** row["attempts"]), self._delivery.backoff_max)
            new.update(next_attempt_at=now + delay, last_error=error)
            self._write(new)
            log.warning("notification %s to %s failed (attempt %d), retrying in %gs: %s", row["id"],
                        row["receiver"], new["attempts"], delay.total_seconds(), error)
            return self._public(new)
        except Exception as exc:  # noqa: BLE001 - a bad stored payload or a bug in a sender: fail the row, not the run
            return self._fail(new, f"{type(exc).__name__}: {str(exc).splitlines()[0][:_ERROR_CHARS] if str(exc) else ''}")
        new.update(status="sent", sent_at=now, last_error="")
        self._write(new)
        log.info("notification %s sent to %s (%s, attempt %d)", row["id"], row["receiver"], rcv.kind, new["attempts"])
        return self._public(new)

    def _fail(self, new: dict, error: str) -> dict:
        new.update(status="failed", last_error=error)
        self._write(new)
        log.warning("notification %s to %s failed for good after %d attempt%s: %s", new["id"], new["receiver"],
                    new["attempts"], "" if new["attempts"] == 1 else "s", error)
        return self._public(new)

    @staticmethod
    def _public(row: dict) -> dict:
        return {k: v for k, v in row.items() if k != "payload"}

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

