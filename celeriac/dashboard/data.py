"""Everything the dashboard reads or changes, in one place: the broker, the result backend
and the control API, never a copy in this process's memory.

The pages call :class:`DashboardData` only, so several dashboard processes agree, a
restart loses nothing, and each broker or backend call a page needs is one method here
(the pages of browsing a queue, requeueing dead letters, pausing a queue, metric charts
and task search are added with their broker and backend calls; the Periodic page's
reading is :mod:`.periodic`).

Each call may go through ``call``: the server passes gevent's thread pool, so a slow
broker round trip (a busy SQLite database, a far Redis) waits in a real thread while the
server's hub goes on serving other requests and live tails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.beat.presence import worker_nodes
from celeriac.dashboard import periodic
from celeriac.message import peek_task_id

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import ResultRecord
    from celeriac.brokers.base import QueueStats, WorkerEvent

log = logging.getLogger("celeriac.dashboard")

T = TypeVar("T")
Runner = Callable[..., Any]

#: Dead letters one page lists (the newest); paginated listing comes with Broker.browse.
DEAD_LETTERS_SHOWN = 100
#: Recent worker events searched for the latest blocking reports of each worker.
BLOCKING_SCAN = 2000
#: Blocking reports kept per worker on the Workers page.
BLOCKING_SHOWN = 5


def _direct(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


@dataclass(frozen=True)
class QueueRow:
    name: str
    stats: QueueStats
    #: True when no live worker consumes it while it has messages.
    unserved: bool


@dataclass(frozen=True)
class RunningTask:
    task_id: str
    name: str
    queue: str
    deliveries: int
    #: Unix time its supervisor learnt it started (None: a node of an older version).
    started_at: float | None = None


@dataclass(frozen=True)
class WorkerRow:
    name: str
    info: dict[str, Any]
    #: Seconds since the last heartbeat.
    heartbeat_age: float
    running: list[RunningTask] = field(default_factory=list)
    #: The newest ``task-blocked`` events of this node, newest first (their ``data``
    #: with the event's ``time``): task, id, pid, stack.
    blocking: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class DeadRow:
    id: str
    queue: str
    task: str | None
    task_id: str | None
    reason: str
    deliveries: int
    failed_at: float


def _running(entry: list[Any]) -> RunningTask:
    """One task of a heartbeat's ``consumers`` (:func:`celeriac.worker.attribution.held_by`)."""
    started = entry[6] if len(entry) > 6 and isinstance(entry[6], int | float) else None
    return RunningTask(task_id=str(entry[1]), name=str(entry[2]), queue=str(entry[5]),
                       deliveries=int(entry[3]), started_at=float(started) if started else None)


class DashboardData:
    """The dashboard's view of one app's broker and result backend."""

    def __init__(self, app: Celeriac, call: Runner = _direct) -> None:
        self.app = app
        self.call = call

    # -- queues ----------------------------------------------------------------------------
    def queues(self) -> list[QueueRow]:
        stats: dict[str, QueueStats] = self.call(self.app.broker.stats)
        workers = self.call(self.app.broker.workers)
        served = {q for w in workers for q in w.info.get("queues", [])}
        return [QueueRow(name, s, bool(s.ready or s.scheduled or s.in_flight) and name not in served)
                for name, s in sorted(stats.items())]

    def purge(self, queue: str) -> int:
        """Delete the ready and scheduled messages of ``queue``."""
        count: int = self.call(self.app.broker.purge, queue)
        return count

    # -- workers ---------------------------------------------------------------------------
    def workers(self, *, blocking_reports: bool = True) -> list[WorkerRow]:
        """Live nodes by name; with their latest blocking reports unless told not to (a
        read of up to :data:`BLOCKING_SCAN` events that /metrics does without)."""
        found = worker_nodes(self.call(self.app.broker.workers))  # beats: the Periodic page
        blocking = self.blocking_reports() if found and blocking_reports else {}
        now = time.time()
        rows = []
        for w in sorted(found, key=lambda w: w.name):
            running = [_running(entry)
                       for entries in (w.info.get("consumers") or {}).values() for entry in entries
                       if isinstance(entry, list) and len(entry) >= 6]
            rows.append(WorkerRow(w.name, w.info, max(0.0, now - w.last_seen), running,
                                  blocking.get(w.name, [])))
        return rows

    def last_event_seq(self) -> int:
        """The ``seq`` of the newest worker event (0: none), found with O(log seq) reads of
        one event each: the broker API reads forwards from a cursor only."""
        def exists(after: int) -> bool:
            return bool(self.call(self.app.broker.events, after, 1))

        if not exists(0):
            return 0
        low, high = 0, 1  # an event exists after low; find a high with none after it
        while exists(high):
            low, high = high, high * 2
        while high - low > 1:  # invariant: exists(low), not exists(high)
            middle = (low + high) // 2
            if exists(middle):
                low = middle
            else:
                high = middle
        return high

    def events(self, after: int, limit: int = 100) -> list[WorkerEvent]:
        found: list[WorkerEvent] = self.call(self.app.broker.events, after, limit)
        return found

    def blocking_reports(self) -> dict[str, list[dict[str, Any]]]:
        """Worker name -> its newest ``task-blocked`` reports, from the last
        :data:`BLOCKING_SCAN` worker events (a bounded read, whatever the stream holds)."""
        after = max(0, self.last_event_seq() - BLOCKING_SCAN)
        reports: dict[str, list[dict[str, Any]]] = {}
        while True:
            batch = self.events(after, 1000)
            for event in batch:
                if event.type == "task-blocked":
                    reports.setdefault(event.worker, []).append({**event.data, "time": event.time})
            if len(batch) < 1000:
                break
            after = batch[-1].seq
        return {worker: list(reversed(found))[:BLOCKING_SHOWN] for worker, found in reports.items()}

    # -- periodic tasks --------------------------------------------------------------------
    def periodic(self) -> periodic.PeriodicView:
        """The app's beat entries with their last and next runs, and the running beats."""
        return periodic.read(self.app, self.call)

    # -- dead letters ----------------------------------------------------------------------
    def dead_letters(self, queue: str | None = None) -> list[DeadRow]:
        letters = self.call(self.app.broker.dead_letters, queue, DEAD_LETTERS_SHOWN)
        rows = []
        for letter in letters:
            name, task_id = peek_task_id(letter.body)
            rows.append(DeadRow(letter.id, letter.queue, name, task_id, letter.reason,
                                letter.delivery_count, letter.failed_at))
        return rows

    # -- tasks -----------------------------------------------------------------------------
    def task(self, task_id: str) -> ResultRecord | None:
        """The task's stored result record (None: none stored, or it expired)."""
        record: ResultRecord | None = self.call(self.app.backend.get, task_id)
        return record

    def revoke(self, task_id: str, *, terminate: bool) -> None:
        """Revoke ``task_id`` for every worker; with ``terminate``, stop it if running."""
        self.call(lambda: self.app.control.revoke(task_id, terminate=terminate))

    # -- health ----------------------------------------------------------------------------
    def health(self) -> dict[str, str]:
        """``{"broker": "ok" | "unreachable", "backend": ...}``: nothing more, since anyone
        may ask (the error, which may name a host, goes to the log)."""
        status = {}
        for name, ping in (("broker", self.app.broker.ping), ("backend", self.app.backend.ping)):
            try:
                self.call(ping)
                status[name] = "ok"
            except Exception as exc:
                log.warning("health check: %s unreachable: %s", name, exc)
                status[name] = "unreachable"
        return status
