"""Revocation in a worker process: poll the broker, refuse revoked tasks, stop terminated ones.

Revocations live in the broker (:mod:`celeriac.revoke`). Each worker process
reads them all when it starts, then polls for new ones every
:data:`POLL_INTERVAL` seconds from the consumer loop's ``tick`` (one cheap
broker call with a cursor), and keeps the unexpired ids in memory, so
:meth:`Revoker.check_run` is a dict lookup on the hot path.

``terminate=True`` also stops a task that is running here. Thread and green
pools raise :class:`~celeriac.exceptions.Terminated` in the task's thread or
greenlet (:meth:`Pool.interrupt`); the task is recorded as REVOKED and its
message acked. Where that cannot work -- prefork and solo run the task on the
process's main thread, and a thread stuck in one long C call never reaches the
next bytecode -- the process asks the supervisor (a ``Terminate`` status event)
to fail the task as REVOKED, ack it and replace the process; its other messages
go back at once, uncharged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celeriac.backends.base import ResultRecord
from celeriac.brokers.base import Broker, Revocation
from celeriac.exceptions import Terminated
from celeriac.middleware.base import Middleware, TaskRun
from celeriac.pools.base import Pool
from celeriac.worker.status import StatusWriter, Terminate

log = logging.getLogger("celeriac.worker")

#: Seconds between two looks at the broker's revocations.
POLL_INTERVAL = 0.5
#: Revocations read per broker call (a fresh process reads pages until it has them all).
PAGE = 1000
#: Seconds a thread or greenlet gets to stop after ``Terminated`` was raised in it,
#: before the process is replaced instead.
TERMINATE_GRACE = 2.0
#: Seconds between sweeps of expired ids from memory.
PRUNE_INTERVAL = 60.0


class Revoker(Middleware):
    """Keeps this process's view of the revoked ids and acts on it."""

    def __init__(self, broker: Broker, pool: Pool, status: StatusWriter) -> None:
        self.broker = broker
        self.pool = pool
        self.status = status
        #: Revoked task id -> when the revocation expires (time.time()).
        self.revoked: dict[str, float] = {}
        #: Revoked ids that also asked for a running task to be stopped -> signal name.
        self.terminate: dict[str, str] = {}
        #: Task id -> the running task and the pool's handle on its thread or greenlet
        #: (None: it cannot be interrupted in-process). Written by jobs, read by the
        #: consumer loop; a tuple, as one is made for every task.
        self.running: dict[str, tuple[TaskRun, Any]] = {}
        #: Task id -> time.monotonic() when a running task was asked to terminate.
        self.asked: dict[str, float] = {}
        #: Task ids the supervisor was asked to replace the process for.
        self.escalated: set[str] = set()
        self.cursor = 0
        self._next_poll = 0.0
        self._next_prune = time.monotonic() + PRUNE_INTERVAL

    # -- keeping up with the broker -----------------------------------------------------
    def process_started(self, app: Any) -> None:
        self.poll()

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + POLL_INTERVAL
        self.poll()
        self._escalate(now)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL
            self._prune()

    def poll(self) -> None:
        """Read the revocations stored since the last look, and act on terminates."""
        while True:
            page = self.broker.revocations(after=self.cursor, limit=PAGE)
            for revocation in page:
                self._learn(revocation)
            if page:
                self.cursor = page[-1].seq
            if len(page) < PAGE:
                break
        if self.terminate:
            for task_id, (run, handle) in list(self.running.items()):
                signal = self.terminate.get(task_id)
                if signal is not None and task_id not in self.asked:
                    self._stop(run, handle, signal)

    def _learn(self, revocation: Revocation) -> None:
        task_id = revocation.task_id
        self.revoked[task_id] = max(revocation.expires, self.revoked.get(task_id, 0.0))
        if revocation.terminate:
            self.terminate[task_id] = revocation.signal

    def _prune(self) -> None:
        now = time.time()
        for task_id in [t for t, expires in self.revoked.items() if expires <= now]:
            del self.revoked[task_id]
            self.terminate.pop(task_id, None)

    # -- stopping a running task --------------------------------------------------------
    def _stop(self, run: TaskRun, handle: Any, signal: str) -> None:
        self.asked[run.request.id] = time.monotonic()
        run.signal = signal
        if run.task.is_async and _interrupt_coroutine(run):
            # On any pool: the coroutine ends at its await; a loop blocked for
            # TERMINATE_GRACE escalates to the supervisor as a stuck thread does.
            log.warning("terminating task %s[%s] (revoked, %s): cancelling its coroutine",
                        run.task.name, run.request.id, signal)
        elif handle is not None and self.pool.can_interrupt:
            log.warning("terminating task %s[%s] (revoked, %s)", run.task.name, run.request.id,
                        signal)
            self.pool.interrupt(handle, Terminated)
        else:
            self._ask_supervisor(run, signal)

    def _ask_supervisor(self, run: TaskRun, signal: str) -> None:
        if run.delivery is None or run.request.id in self.escalated:
            return
        self.escalated.add(run.request.id)
        log.warning("task %s[%s] revoked with terminate (%s): asking the supervisor to replace "
                    "this process", run.task.name, run.request.id, signal)
        self.status.send(Terminate(run.delivery.id, run.request.id, signal))

    def _escalate(self, now: float) -> None:
        """A task that ignored Terminated for TERMINATE_GRACE seconds (stuck in a C call)."""
        for task_id, asked in list(self.asked.items()):
            entry = self.running.get(task_id)
            if entry is not None and task_id not in self.escalated and (
                    now - asked >= TERMINATE_GRACE):
                self._ask_supervisor(entry[0], entry[0].signal or "SIGTERM")

    # -- the hooks on each run ----------------------------------------------------------
    def check_run(self, run: TaskRun) -> ResultRecord | None:
        expires = self.revoked.get(run.request.id)
        if expires is None or expires <= time.time():
            return None
        from celeriac.worker.run import revoked_record

        log.info("task %s[%s] was revoked; not running it", run.task.name, run.request.id)
        run.revoked = "revoked"
        return revoked_record(run.request.id, run.task.name, "revoked", run.request.retries)

    def before_task(self, run: TaskRun) -> None:
        self.running[run.request.id] = (run, self.pool.current_job())

    def after_task(self, run: TaskRun) -> None:
        task_id = run.request.id
        self.running.pop(task_id, None)
        if self.asked:
            self.asked.pop(task_id, None)
            self.escalated.discard(task_id)


def _interrupt_coroutine(run: TaskRun) -> bool:
    """Throw Terminated into ``run``'s coroutine, if it runs yet."""
    from celeriac.aio.await_ import interrupt

    return interrupt(run.request, Terminated())
