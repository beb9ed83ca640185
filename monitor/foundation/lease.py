"""A lease in the store: at most one holder of a name at a time, taken over when its holder stops renewing.

The protocol is the same SQL on one node and on a cluster (tables/leases.py): a candidate
that finds the newest term expired (or released, or none) claims the next term; ClickHouse
keeps one claim per term (the insert de-duplication token), so every candidate that then
reads the term sees the same holder. The holder renews before its expiry; a standby polls
and claims the next term once the expiry has passed by its clock.

Clock skew: expiry is compared on each candidate's clock, so a standby whose clock runs
ahead takes over that much early. Fencing (``held()`` before each piece of work) bounds the
overlap to work already started when the term changed.
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

from monitor.foundation.storage import StoreError
from monitor.foundation.tables import leases


def new_holder_id() -> str:
    """host:pid:random, so a log line says which process held a lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """``exclusive``: no other process can reach this store (the embedded one, locked by its process), so
    a holder found there is this data directory's previous process, gone, and its lease is taken at once
    instead of after its expiry (a restart after a kill would otherwise run no job, alerts included,
    for up to two lease periods)."""

    def __init__(self, store, name: str, period: dt.timedelta, clock, holder: str | None = None,
                 exclusive: bool = False):
        self.store = store
        self.name = name
        self.period = period
        self.clock = clock
        self.holder = holder or new_holder_id()
        self.exclusive = exclusive
        self.term = 0

    def acquire(self) -> bool:
        """Renew the lease if this holder has it, else claim the next term if it is free: held after this call?"""
        now = self.clock.now()
        st = leases.state(self.store, self.name)
        if st.holder == self.holder and not st.released and st.expires_at > now:
            leases.renew(self.store, self.name, st.term, self.holder, now + self.period)
            self.term = st.term
            return True
        if st.holder and not st.released and st.expires_at > now and not (self.exclusive and self.term == 0):
            return False
        try:
            leases.claim(self.store, self.name, st.term + 1, self.holder, now + self.period)
        except StoreError:
            return False  # e.g. a quorum insert refused on a cluster: not ours this round
        after = leases.state(self.store, self.name)
        if after.term == st.term + 1 and after.holder == self.holder:
            self.term = after.term
            return True
        return False

    def held(self) -> bool:
        """Whether this holder has the lease now (a fresh read: the fencing check before work)."""
        st = leases.state(self.store, self.name)
        return st.holder == self.holder and not st.released and st.expires_at > self.clock.now()

    def release(self) -> None:
        """Give the lease up at once, so a standby need not wait for the expiry."""
        st = leases.state(self.store, self.name)
        if st.holder == self.holder and not st.released:
            leases.renew(self.store, self.name, st.term, self.holder, self.clock.now(), kind="release")
