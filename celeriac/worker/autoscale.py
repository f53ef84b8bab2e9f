"""``celeriac worker --autoscale MAX,MIN``: a pool that grows with the load and shrinks when idle.

Celery's meaning, and its policy (``celery/worker/autoscale.py``), looked at once a second:

* **grow** at once to the load, at most ``MAX``, when the load is above the pool's size;
* **shrink** to the load, at least ``MIN``, when it is below, but only once no task has
  started and the pool has not grown for a *keepalive* (``worker_autoscale_keepalive``,
  30 s, or Celery's ``AUTOSCALE_KEEPALIVE`` environment variable): a pause between two
  bursts does not throw away the processes the next burst needs;
* the pool starts at ``MIN``; ``-c`` is not used (Celery's rule).

The *size* is what ``pool_grow``/``pool_shrink`` change (:attr:`_Group.size`): slots
of the one worker process for pools that resize in place (threads, gevent, eventlet),
processes for pools of one task per process (prefork, solo).

The *load* is the tasks running on the node plus the messages ready in its queues.
Celery counts the messages its consumer prefetched instead; here a process of an
autoscaled pool holds no more messages than it can start (its fetch size follows its
current concurrency: :meth:`Supervisor.prefetch`), so what waits beyond the pool's size
waits in the broker, where the supervisor sees it with one ``Broker.stats()`` call, and
where another node can take it meanwhile. That call is made only when every slot is busy
and the pool could still grow, the only case its answer can change.

Celeriac keeps at least one slot: ``MIN`` 0 (Celery's default for ``--autoscale 10``)
means 1 here, since a node with no worker process fetches nothing and never reports
ready. ``celeriac control autoscale MAX [MIN]`` changes the bounds while the node runs
(applied at once, as Celery's), and ``pool_grow``/``pool_shrink`` are refused on an
autoscaled node with Celery's message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import BrokerError, ConfigurationError
from celeriac.middleware.base import Middleware

if TYPE_CHECKING:
    from celeriac.worker.options import PoolGroup
    from celeriac.worker.supervisor import Supervisor

log = logging.getLogger("celeriac.supervisor")

#: Seconds between two decisions (Celery's autoscaler thread looks once a second too).
INTERVAL = 1.0


def parse_autoscale(value: str) -> tuple[int, int]:
    """``--autoscale`` as Celery reads it: ``MAX,MIN`` or ``MAX`` (MIN 0), the larger of the
    two numbers being MAX whatever their order; returns ``(MAX, MIN)``."""
    parts = [part.strip() for part in value.split(",")]
    if len(parts) > 2:
        raise ConfigurationError(f"--autoscale {value!r}: expected MAX,MIN or MAX (two comma "
                                 "separated whole numbers or one)")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise ConfigurationError(f"--autoscale {value!r}: expected whole numbers, as in "
                                 "--autoscale 10,3") from None
    if len(numbers) == 1:
        numbers.append(0)
    high, low = max(numbers), min(numbers)
    if low < 0 or high < 1:
        raise ConfigurationError(f"--autoscale {value!r}: MAX must be at least 1 and MIN at "
                                 "least 0")
    return high, low


def decide(current: int, *, high: int, low: int, load: int, idle_for: float,
           keepalive: float) -> int:
    """The pool's next size (Celery's policy, above): ``current`` is its size now, ``load``
    the tasks running plus waiting, ``idle_for`` the seconds since a task last started or
    the pool last grew. Sizes out of ``[low, high]`` (after ``autoscale`` changed the bounds)
    come back into them at once; ``low`` is at least 1."""
    floor = max(low, 1)
    high = max(high, floor)
    if current > high:
        return high
    if current < floor:
        return floor
    if min(load, high) > current:
        return min(load, high)
    if max(load, floor) < current and idle_for >= keepalive:
        return max(load, floor)
    return current


def autoscaled_groups(groups: Sequence[PoolGroup], autoscale: tuple[int, int],
                      concurrency: int | None) -> list[PoolGroup]:
    """The pool group ``--autoscale`` sizes, made to start at MIN (at least 1).

    One group only: ``-P gevent:1000:io -P prefork:2:cpu`` has no one pool for MAX,MIN to
    size. A thread or green pool grows by slots in its one process, so ``--processes``
    above 1 is refused too. ``concurrency`` is ``-c`` or ``worker_concurrency`` when given:
    not used (Celery's rule), as the log says.
    """
    from celeriac.pools import get_pool

    high, low = autoscale
    if len(groups) != 1:
        raise ConfigurationError("--autoscale sizes a node's one pool; with several -P groups, "
                                 "give each its concurrency instead (-P NAME:CONCURRENCY)")
    [group] = groups
    in_place = get_pool(group.pool).resizable
    if in_place and (group.processes or 1) > 1:
        raise ConfigurationError(f"--autoscale with --processes {group.processes}: an autoscaled "
                                 f"{group.pool} pool grows by slots in its one worker process")
    start = max(low, 1)
    if concurrency is not None:
        log.info("-c %d is not used: --autoscale %d,%d starts the pool at %d and sizes it "
                 "between %d and %d with the load (Celery's rule)", concurrency, high, low,
                 start, start, high)
    if low < 1:
        log.info("--autoscale %d,0: the pool keeps at least one %s (a node with none would "
                 "fetch nothing)", high, "slot" if in_place else "process")
    return [replace(group, concurrency=start, processes=group.processes if in_place else start)]


class Autoscaler(Middleware):
    """The supervisor's hook that applies :func:`decide` to its pool once a second."""

    def __init__(self, high: int, low: int, keepalive: float) -> None:
        self.high = high
        self.low = low
        self.keepalive = keepalive
        self._next = 0.0
        #: When a task last started or the pool last grew (the node's start at first).
        self._active = time.monotonic()
        #: Tasks started on the node when last looked (Supervisor.totals).
        self._started = 0
        #: The load last measured (``inspect stats``' ``qty``).
        self.load = 0
        self._failing = False

    def node_tick(self, supervisor: Supervisor) -> None:
        now = time.monotonic()
        if now >= self._next and not supervisor.stopping:
            self._next = now + INTERVAL
            self.scale(supervisor)

    def scale(self, supervisor: Supervisor) -> None:
        """Measure the load and resize the pool if :func:`decide` says so."""
        now = time.monotonic()
        started = sum(supervisor.totals.values())
        if started != self._started:
            self._started, self._active = started, now
        group = supervisor.groups[0]
        current = group.size
        self.load = self._load(supervisor, current)
        new = decide(current, high=self.high, low=self.low, load=self.load,
                     idle_for=now - self._active, keepalive=self.keepalive)
        if new == current:
            return
        if new > current:
            self._active = now
        resized = supervisor.resize(group, new)
        log.info("autoscale: scaling %s by %d (load %d, bounds %d..%d): %s %dx%d -> %dx%d",
                 "up" if new > current else "down", abs(new - current), self.load,
                 max(self.low, 1), self.high, group.spec.pool, group.processes,
                 group.per_process, resized.processes, resized.per_process)

    def _load(self, supervisor: Supervisor, current: int) -> int:
        """Tasks running in the pool's processes (not in those retiring after a shrink) plus,
        when that fills the pool and it may grow, the messages ready in its queues."""
        running = sum(len(child.running) for index, child in supervisor.children.items()
                      if index in supervisor.slots)
        if running < current or current >= self.high:
            return running
        try:
            stats = supervisor.app.broker.stats()
        except BrokerError as exc:
            if not self._failing:
                log.warning("autoscale: cannot count the ready messages: %s; sizing by the "
                            "running tasks until it can", exc)
            self._failing = True
            return running
        self._failing = False
        queues = supervisor.groups[0].spec.queues
        return running + sum(stats[queue].ready for queue in queues if queue in stats)

    def update(self, supervisor: Supervisor, high: int | None, low: int | None) -> tuple[int, int]:
        """``celeriac control autoscale MAX [MIN]``: new bounds, applied at once."""
        new_high = self.high if high is None else high
        new_low = self.low if low is None else low
        if new_high < 1 or new_low < 0 or new_low > new_high:
            raise ValueError(f"max must be at least 1 and min from 0 to max, got max={new_high} "
                             f"min={new_low}")
        self.high, self.low = new_high, new_low
        self.scale(supervisor)
        return self.high, self.low

    def info(self, supervisor: Supervisor) -> dict[str, Any]:
        """Celery's ``inspect stats`` ``autoscaler`` entry."""
        return {"max": self.high, "min": self.low, "current": supervisor.groups[0].size,
                "qty": self.load}
