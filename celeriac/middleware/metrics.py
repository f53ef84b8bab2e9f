"""Metric rollups from the worker side: count in memory, add to the broker in batches.

On by default (``worker_send_metrics``); the rows and how brokers keep them are in
:mod:`celeriac.brokers.metrics`. Two middleware, one per kind of process:

* :class:`TaskMetrics` (each worker process) notes how every run ended and how long it
  took, as one tuple appended to a ``deque`` in ``after_task`` (atomic, so jobs on any
  thread or greenlet append without a lock: this is all a task pays). The consumer
  loop's ``tick`` folds them into rows per (minute, task name) and, at most every
  :data:`FLUSH_INTERVAL`, adds the rows to the broker in one ``record_metrics`` call;
  the process's last rows go out when it stops.
* :class:`NodeMetrics` (the supervisor) counts what only the supervisor knows: the
  event loop stalls its processes report (``task-blocked``: the supervisor's
  ``stalls`` counter per task name, read every interval) and the failures of tasks it
  ended itself (a hard time limit, a process lost on a task's last delivery).

Task names are the registered names (``run.task.name``), not a caller's ``shadow``
name, so a worker's rows have at most as many names as it has tasks (and the broker
keeps at most ``MAX_TASK_NAMES`` a minute). Metrics are for watching: a write the
broker refuses is logged and dropped, and never fails a task or an ack.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from celeriac.brokers.metrics import BUCKETS, MetricRow, bucket
from celeriac.middleware.base import Middleware, TaskRun
from celeriac.states import FAILURE, REJECTED, RETRY, SUCCESS

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.brokers.base import Broker
    from celeriac.worker.supervisor import Supervisor

log = logging.getLogger("celeriac.metrics")

#: Seconds between two writes of a process's rows to the broker (at most).
FLUSH_INTERVAL = 2.0
#: Runs noted before the consumer loop folds them into rows without waiting for the interval.
FOLD_SIZE = 1000

#: How a run ended, as :class:`Tally` counts it.
FINISHED, FAILED, RETRIED = 0, 1, 2
#: Where each count sits in a tally's list (then the histogram's buckets).
_PROCESSED, _FAILED, _RETRIED, _STALLS, _HIST = 0, 1, 2, 3, 4


class Tally:
    """Rows being counted in one process: (minute, task name) -> counts."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str], list[int]] = {}

    def _row(self, at: float, name: str) -> list[int]:
        key = (int(at) // 60 * 60, name)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0] * (_HIST + BUCKETS)
        return row

    def run(self, at: float, name: str, ended: int, runtime: float | None) -> None:
        """A run of ``name`` ended at ``at`` (FINISHED, FAILED or RETRIED) after ``runtime``
        seconds (None: nobody timed it)."""
        row = self._row(at, name)
        if ended == RETRIED:
            row[_RETRIED] += 1
        else:
            row[_PROCESSED] += 1
            if ended == FAILED:
                row[_FAILED] += 1
        if runtime is not None:
            row[_HIST + bucket(runtime)] += 1

    def stalls(self, at: float, name: str, count: int) -> None:
        self._row(at, name)[_STALLS] += count

    def take(self) -> list[MetricRow]:
        """Every row counted so far (and forget them)."""
        rows, self.rows = self.rows, {}
        return [MetricRow(minute, name, c[_PROCESSED], c[_FAILED], c[_RETRIED],
                          tuple(c[_HIST:]), c[_STALLS]) for (minute, name), c in rows.items()]


def record_now(broker: Broker, rows: list[MetricRow]) -> None:
    """Add ``rows`` to the broker's in one call; a failure is logged, never raised."""
    if not rows:
        return
    try:
        broker.record_metrics(rows)
    except Exception as exc:
        log.warning("could not record %d metric row(s): %s; they are dropped", len(rows), exc)


def how_it_ended(run: TaskRun) -> int | None:
    """FINISHED, FAILED or RETRIED for a run that counts; None for one that does not (revoked,
    ``Ignore``, a ``Reject`` that requeues its message: it runs again)."""
    record = run.record
    if record is None:
        return None
    status = record.status
    if status == SUCCESS:
        return FINISHED
    if status == FAILURE or (status == REJECTED and not run.requeue):
        return FAILED
    if status == RETRY:
        return RETRIED
    return None


class TaskMetrics(Middleware):
    """A worker process's rollups, counted as runs end and written in batches."""

    def __init__(self, broker: Broker, *, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.broker = broker
        self.flush_interval = flush_interval
        self.tally = Tally()
        #: (time.time(), task name, how it ended, runtime) of runs not folded yet
        #: (appended by jobs, drained by the loop).
        self.ended: deque[tuple[float, str, int, float]] = deque()
        #: time.monotonic() after which a tick writes what was counted.
        self._due = 0.0

    def after_task(self, run: TaskRun) -> None:
        ended = how_it_ended(run)
        if ended is not None:
            self.ended.append((time.time(), run.task.name, ended, run.runtime))

    def tick(self) -> None:
        if len(self.ended) >= FOLD_SIZE:
            self._fold()
        if time.monotonic() >= self._due:
            self.flush()

    def _fold(self) -> None:
        ended, tally = self.ended, self.tally
        for _ in range(len(ended)):
            at, name, how, runtime = ended.popleft()
            tally.run(at, name, how, runtime)

    def flush(self) -> None:
        """Write everything counted so far in one call."""
        self._due = time.monotonic() + self.flush_interval
        if self.ended:
            self._fold()
        if self.tally.rows:
            record_now(self.broker, self.tally.take())

    def process_started(self, app: Celeriac) -> None:
        self._due = time.monotonic() + self.flush_interval

    def process_stopping(self, app: Celeriac, exitcode: int) -> None:
        self.flush()


class NodeMetrics(Middleware):
    """The supervisor's rollups: stalls per task name, and failures of tasks it ended."""

    def __init__(self, *, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.flush_interval = flush_interval
        self.tally = Tally()
        self.broker: Broker | None = None
        #: The supervisor's ``stalls`` counts as of the last look.
        self._seen: dict[str, int] = {}
        self._due = 0.0

    def node_starting(self, supervisor: Supervisor) -> None:
        self.broker = supervisor.app.broker
        self._seen = dict(supervisor.stalls)
        self._due = time.monotonic() + self.flush_interval

    def after_task(self, run: TaskRun) -> None:
        """A task the supervisor ended itself: its process cannot count it any more."""
        ended = how_it_ended(run)
        if ended is not None:
            self.tally.run(time.time(), run.task.name, ended, None)

    def node_tick(self, supervisor: Supervisor) -> None:
        if time.monotonic() >= self._due:
            self.flush(supervisor)

    def node_stopped(self, supervisor: Supervisor) -> None:
        self.flush(supervisor)

    def flush(self, supervisor: Supervisor) -> None:
        """Count the stalls reported since the last look, and write what was counted."""
        self._due = time.monotonic() + self.flush_interval
        now = time.time()
        for name, count in supervisor.stalls.items():
            new = count - self._seen.get(name, 0)
            if new > 0:
                self.tally.stalls(now, name, new)
                self._seen[name] = count
        if self.tally.rows and self.broker is not None:
            record_now(self.broker, self.tally.take())
