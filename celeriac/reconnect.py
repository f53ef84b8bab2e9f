"""Retrying through connection loss, with one log line per outage: shared by every client.

Redis (:mod:`celeriac.redisconn`) and RabbitMQ (:mod:`celeriac.brokers.amqp.connection`)
lose connections the same way and must say so the same way: a warning when the
connection is first lost, one line when it is back (with how long it was gone),
and never a traceback per attempt. The errors that count as "transient" differ per
client library, so they are a parameter; the policy (exponential backoff from 50 ms
to 2 s, an optional bound on how long one call keeps trying) is the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ErrorTypes = tuple[type[BaseException], ...]


class Reconnector:
    """Runs calls, retrying through connection loss with exponential backoff.

    ``transient``: the errors after which the connection is gone but the server may
    come back; ``permanent``: those among them that waiting will not fix (a wrong
    password), raised as ``error`` at once. ``give_up_after`` bounds how long one
    call keeps retrying (``None``: forever, what a worker wants: its running tasks go
    on and it catches up when the server is back). Past it, ``error(message)`` is
    raised. ``sleep`` waits between attempts (an owner thread passes a wait that its
    shutdown can cut short).
    """

    def __init__(self, where: str, error: Callable[[str], Exception],
                 give_up_after: float | None = 20.0, *, transient: ErrorTypes,
                 permanent: ErrorTypes = (), logger: logging.Logger,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.where = where
        self.error = error
        self.give_up_after = give_up_after
        self.transient = transient
        self.permanent = permanent
        self.logger = logger
        self.sleep = sleep
        self._lost_since: float | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T], *, retry: bool = True) -> T:
        """``fn()``; on connection loss retry it if ``retry``, else raise ``error`` at once."""
        started = time.monotonic()
        pause = 0.05
        while True:
            try:
                value = fn()
            except self.transient as exc:
                if isinstance(exc, self.permanent) or not retry:
                    # Waiting will not fix a password; without retry the caller reports
                    # the error, and a "retrying" line would be false.
                    raise self.error(f"{self.where}: {describe(exc)}") from exc
                self.lost(exc)
                waited = time.monotonic() - started
                if self.give_up_after is not None and waited >= self.give_up_after:
                    raise self.error(f"{self.where}: {describe(exc)}") from exc
                if self.give_up_after is not None:
                    pause = min(pause, max(self.give_up_after - waited, 0.01))
                self.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            if self._lost_since is not None:
                self.back()
            return value

    def lost(self, exc: BaseException) -> None:
        """Note that the connection is gone (logged only the first time per outage).

        Public for a caller that notices the loss outside :meth:`call` (an owner
        thread whose reads fail), so the outage is still one line and its end another.
        """
        with self._lock:
            if self._lost_since is None:
                self._lost_since = time.monotonic()
                self.logger.warning("lost the connection to %s (%s); retrying with backoff",
                                    self.where, describe(exc))

    def back(self) -> None:
        """Note that the connection works again (logged once, with the outage's length)."""
        with self._lock:
            if self._lost_since is not None:
                self.logger.warning("reconnected to %s after %.1fs", self.where,
                                    time.monotonic() - self._lost_since)
                self._lost_since = None


def describe(exc: BaseException) -> str:
    """One line for a connection error (client libraries' messages can span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
