"""Notifications, one module per receiver kind (as Alertmanager's ``notify/``), and the registry of kinds.

A kind is a module here with:

* ``KIND``, its name, which is also its key in a receiver's config
  (``{name: team, slack: {url: ...}}``);
* ``Settings``, the pydantic model of that key's settings;
* ``payload(target, n)``, the JSON body it expects for a :class:`Notification`;
* ``send(target, payload, timeout) -> None``, one delivery attempt that raises
  :class:`DeliveryError` telling whether trying again later can help;
* ``stored(payload) -> dict``, the payload as the outbox may keep it (``keep_all``
  when it holds no secret);
* ``RESEND_EVERY``, None or a timedelta or a function of the receiver's
  settings: how often a firing group is sent again, whatever the route's
  ``repeat_interval`` (Alertmanager forgets an alert not re-sent before its
  ``endsAt``; see :mod:`alerts.dispatch`).

:class:`ReceiverKind` states that interface; every module in :data:`KINDS` has it all.

:data:`KINDS` is the one list of kinds: adding one is a new module and a line
there. The foundation's config only checks that a receiver has a name and one
kind whose value is a mapping (it may not import the alert engine);
:func:`receivers` validates the settings with their kind's model, and every
process that notifies calls it at start-up, so a bad receiver still fails
before anything runs, with its key named.

Payloads are built once, when the decision to notify is made, and stored in
the outbox; sending does not rebuild them, so a retry sends what was decided.
The only exception is a secret a kind keeps out of storage and adds back from
the config at send time (PagerDuty's routing key). Retrying, backoff and giving
up are the outbox's business (:mod:`alerts.delivery`).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from pydantic import ValidationError

from alerts.notify import alertmanager, email, pagerduty, slack, webhook
from alerts.notify.common import AlertView, DeliveryError, Notification, incident_url, rfc3339, title
from alerts.notify.pagerduty import dedup_key
from monitor.foundation.config import Config, ConfigError, format_error

__all__ = ["AlertView", "DeliveryError", "KINDS", "Notification", "Receiver", "ReceiverKind", "build_payload", "dedup_key",
           "incident_url", "receivers", "rfc3339", "send", "stored", "title"]



@runtime_checkable
class ReceiverKind(Protocol):
    """A receiver kind: a module of ``alerts/notify`` (see the module docstring)."""

    KIND: str
    Settings: type
    RESEND_EVERY: dt.timedelta | Callable[[Any], dt.timedelta] | None

    def payload(self, target, n: Notification) -> Any: ...

    def send(self, target, payload, timeout: float) -> None: ...

    def stored(self, payload) -> Any: ...


KINDS: dict[str, ReceiverKind] = {m.KIND: m for m in (webhook, slack, pagerduty, email, alertmanager)}


@dataclass(frozen=True)
class Receiver:
    """A configured receiver: ``target`` is its settings, an instance of its kind's ``Settings`` model."""

    name: str
    kind: str
    target: Any


def receivers(config: Config) -> dict[str, Receiver]:
    """The configured receivers by name, their settings validated. Raises ConfigError naming every bad key."""
    out: dict[str, Receiver] = {}
    errors: list[str] = []
    for r in config.alerts.receivers:
        where = f"alerts.receivers[{r.name}]"
        module = KINDS.get(r.kind)
        if module is None:
            errors.append(f"config key '{where}': unknown receiver kind {r.kind!r}; kinds are {', '.join(KINDS)}")
            continue
        try:
            target = module.Settings.model_validate(r.settings)
        except ValidationError as exc:
            errors += [format_error(e, prefix=f"{where}.{r.kind}") for e in exc.errors()]
            continue
        out[r.name] = Receiver(r.name, r.kind, target)
    if errors:
        raise ConfigError("; ".join(errors))
    return out


def build_payload(kind: str, target, n: Notification) -> dict:
    """The body receiver ``kind`` expects for notification ``n``; ``target`` is its settings model."""
    module = KINDS.get(kind)
    if module is None:
        raise ValueError(f"unknown receiver kind {kind!r}; expected one of {', '.join(KINDS)}")
    return module.payload(target, n)


def stored(kind: str, payload: dict) -> dict:
    """``payload`` as the outbox keeps it: what the kind's ``stored`` leaves, by default all of it."""
    module = KINDS.get(kind)
    return module.stored(payload) if module is not None else payload


def send(kind: str, target, payload: dict, timeout_seconds: float | None = None) -> None:
    """Deliver ``payload`` once. Raises :class:`DeliveryError` (with ``retryable``) when it was not delivered.

    HTTP kinds: 2xx is delivered; 429, 5xx, timeouts and connection errors are
    retryable; other statuses are not. Email: SMTP 4xx and connection errors are
    retryable, 5xx are not. ``timeout_seconds`` defaults to the receiver's ``timeout``.
    """
    module = KINDS.get(kind)
    if module is None:
        raise DeliveryError(f"unknown receiver kind {kind!r}", retryable=False)
    if timeout_seconds is None:
        timeout_seconds = target.timeout.total_seconds()
    module.send(target, payload, timeout_seconds)
