"""Paused queues, as a worker process sees them (``Broker.pause``).

A paused queue keeps taking messages; the worker processes consuming it stop
fetching from it. Each process reads the broker's paused set at most once per
:data:`PAUSE_CHECK` seconds, from its consumer loop, so the hot path pays one
clock reading per fetch, and the broker one cheap read per second per process.
The process says in its log when a queue it consumes is paused and when it is
resumed. A failed read keeps the last known set (the next fetch would fail the
same way and go through the broker's reconnection anyway).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from celeriac.brokers.base import Broker

log = logging.getLogger("celeriac.worker")

#: Seconds between two reads of the paused queues: a pause takes effect within this
#: (plus the fetch under way, at most ``FETCH_WAIT``).
PAUSE_CHECK = 1.0


class PauseWatch:
    """Filters the queues a consumer fetches from by the broker's paused set."""

    def __init__(self, broker: Broker, interval: float = PAUSE_CHECK) -> None:
        self.broker = broker
        self.interval = interval
        self.paused: set[str] = set()
        self._next = 0.0

    def active(self, queues: Sequence[str]) -> list[str]:
        """The ``queues`` that are not paused (the set re-read once per interval)."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._refresh(queues)
        if not self.paused:
            return list(queues)
        return [q for q in queues if q not in self.paused]

    def _refresh(self, queues: Sequence[str]) -> None:
        try:
            paused = self.broker.paused()
        except Exception as exc:
            log.warning("could not read the paused queues (%s); keeping the last known", exc)
            return
        mine = set(queues)
        for queue in sorted((paused - self.paused) & mine):
            log.warning("worker process %d: queue %s is paused: not fetching from it until "
                        "it is resumed", os.getpid(), queue)
        for queue in sorted((self.paused - paused) & mine):
            log.warning("worker process %d: queue %s was resumed: fetching from it again",
                        os.getpid(), queue)
        self.paused = paused
