"""Cluster-wide rate and concurrency limits, checked in the worker process just
before a task starts.

Celery's ``rate_limit`` throttles each worker process on its own, so ten workers
run a ``"10/s"`` task at 100/s. Here the limit is kept in the broker (one GCRA
value per task name, :mod:`celeriac.brokers.limits`), and the executor asks
:meth:`Limits.admit` right before a run, after expiry and revocation (a revoked
task takes no run from the limit): one broker call for a limited task, none for
the others (one dict lookup in the executor, and no hook of this middleware runs for
them). A run over its limit is not held in the worker: its
message goes back to the broker with an eta at the time reserved for it
(:data:`~celeriac.middleware.base.DEFER`), uncharged, so deferring never counts
towards ``broker_max_deliveries``, and the worker's slot goes to the next message
at once. It was never started, so a crash cannot be blamed on it either.

``concurrency_limit=N`` (celeriac's own) keeps at most N runs of a task going
anywhere: a slot per run in the broker, held under the message's broker id for
``broker_lease_timeout`` seconds and renewed with the leases, released when the
run ends. A worker that dies leaves its slots to expire with its leases; a
message redelivered after that takes over its own slot. A run that finds every
slot taken is deferred by :data:`BUSY_DELAY` (plus a little jitter) and tries
again then: a freed slot is not announced, which keeps the broker side one
sorted set and costs one extra call per waiting message and retry.

Run-time rate limits (``app.control.rate_limit``) are stored in the broker by the
client (:mod:`celeriac.control`), so every worker, including one started later,
uses them: a worker process reads them when it starts, and the node passes each
new one down the command pipe when the control command arrives.
``worker_disable_rate_limits=True`` turns rate limits off on that worker (not
concurrency limits).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celeriac.brokers.limits import BURST
from celeriac.exceptions import ConfigurationError
from celeriac.middleware.base import Middleware, TaskRun
from celeriac.task_options import parse_rate_limit

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.brokers.base import Broker

log = logging.getLogger("celeriac.worker")

#: Seconds a run that found every concurrency slot taken waits before it tries again.
BUSY_DELAY = 0.25
#: Up to this much is added at random, so waiting messages do not all come back at once.
BUSY_JITTER = 0.1


@dataclass(frozen=True, slots=True)
class TaskLimit:
    """The limits in force for one task name on this worker."""

    #: Runs per second (None: no rate limit).
    rate: float | None = None
    #: Runs at once across the cluster (None: no concurrency limit).
    concurrency: int | None = None


class Limits(Middleware):
    """Takes a run from the broker's limits before each run of a limited task."""

    def __init__(self, app: Celeriac, broker: Broker, lease: float) -> None:
        self.app = app
        self.broker = broker
        #: A slot lives this long unless renewed (the message's lease).
        self.ttl = lease
        self.rates_enabled = not app.conf.worker_disable_rate_limits
        #: Run-time rate limits (``control rate_limit``), by task name.
        self.overrides: dict[str, str] = {}
        #: Task name -> its limits, for limited tasks only: the hot path's one lookup.
        self.limited: dict[str, TaskLimit] = {}
        #: Delivery id -> task name, of each concurrency slot this process holds.
        self.slots: dict[str, str] = {}
        self._next_renew = 0.0
        self._rebuild()

    # -- configuration --------------------------------------------------------------------
    def _rebuild(self) -> None:
        limited: dict[str, TaskLimit] = {}
        for name, task in self.app.tasks.items():
            rate = self._rate(name, task.rate_limit) if self.rates_enabled else None
            if rate is not None or task.concurrency_limit is not None:
                limited[name] = TaskLimit(rate, task.concurrency_limit)
        self.limited = limited

    def _rate(self, name: str, own: str | float | None) -> float | None:
        override = self.overrides.get(name)
        if override is not None:
            try:
                return parse_rate_limit(override)
            except ConfigurationError:
                log.error("ignoring the run-time rate limit %r of %s stored in the broker",
                          override, name)
        return parse_rate_limit(own)

    def process_started(self, app: Celeriac) -> None:
        if self.rates_enabled:
            self.overrides = self.broker.rate_limits()
            self._rebuild()

    def set_rate(self, task: str, rate: str) -> None:
        """Use ``rate`` for ``task`` from its next run on (``control rate_limit``)."""
        if not self.rates_enabled:
            return
        self.overrides[task] = rate
        self._rebuild()
        log.info("rate limit of %s is now %s across the cluster", task, rate)

    # -- the check before each run --------------------------------------------------------
    def admit(self, run: TaskRun) -> float | None:
        """None: run now (a slot, if limited, is held: :meth:`release` frees it); else
        defer the message that long. The executor calls it for limited tasks only."""
        limit = self.limited.get(run.task.name)
        if limit is None or run.delivery is None:
            return None
        name, holder = run.task.name, run.delivery.id
        if limit.concurrency is not None:
            if not self.broker.acquire_slot(name, limit.concurrency, holder, self.ttl):
                log.debug("task %s[%s]: all %d slots taken, deferred", name, run.request.id,
                          limit.concurrency)
                return BUSY_DELAY + random.random() * BUSY_JITTER
            self.slots[holder] = name
        if limit.rate is not None:
            delay = self.broker.take_rate_token(name, limit.rate, BURST, holder)
            if delay > 0:
                if self.slots.pop(holder, None) is not None:
                    self.broker.release_slot(name, holder)
                log.debug("task %s[%s]: over its rate limit, deferred %.3fs", name,
                          run.request.id, delay)
                return delay
        return None

    def release(self, run: TaskRun) -> None:
        """The run of a limited task is over: free its slot, if it holds one. (Called by
        the executor, not an ``after_task`` hook, so unlimited tasks do not pay for it.)"""
        if run.delivery is not None:
            name = self.slots.pop(run.delivery.id, None)
            if name is not None:
                self.broker.release_slot(name, run.delivery.id)

    def tick(self) -> None:
        if not self.slots:
            return
        now = time.monotonic()
        if now >= self._next_renew:
            first = not self._next_renew  # the slots were just taken: nothing to renew yet
            self._next_renew = now + self.ttl / 3
            if first:
                return
            self.broker.renew_slots([(name, holder) for holder, name in list(self.slots.items())],
                                    self.ttl)
