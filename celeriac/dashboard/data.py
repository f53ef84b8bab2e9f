"""Everything the dashboard reads or changes, in one place: the broker, the result backend
and the control API, never a copy in this process's memory.

The pages call :class:`DashboardData` only, so several dashboard processes agree, a
restart loses nothing, and each broker or backend call a page needs is one method here.
Listings of messages are the broker's own pages (:meth:`~celeriac.brokers.base.Broker.browse`:
offset and limit go to the server, which never scans the queue for them).
The Periodic page's reading is :mod:`.periodic`.

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

from celeriac.backends.search import read_task_events
from celeriac.beat.presence import worker_nodes
from celeriac.brokers.base import QueueStats
from celeriac.brokers.browse import MAX_PAGE, DeletableKind, Kind, Page
from celeriac.dashboard import periodic
from celeriac.exceptions import BrokerError

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.search import EventsRead, TaskDetail, TaskSummary
    from celeriac.brokers.base import WorkerEvent
    from celeriac.dashboard.tasks import SearchQuery

log = logging.getLogger("celeriac.dashboard")

T = TypeVar("T")
Runner = Callable[..., Any]

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
    #: Of ``stats.scheduled`` (every delayed message), those that are a task's retry.
    retries: int = 0

    @property
    def scheduled(self) -> int:
        """Delayed messages that are not retries (an eta or a countdown)."""
        return max(0, self.stats.scheduled - self.retries)


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
class Listing:
    """One page of a queue's messages of a kind, and the queues that have some."""

    queue: str
    kind: Kind
    page: Page
    limit: int
    #: ``(queue, how many of this kind)`` for each queue holding some, and the one shown.
    queues: list[tuple[str, int]]


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
        """Every queue that has or had a message, is paused or is consumed by a live worker
        (so an empty queue can be paused before its first message)."""
        broker = self.app.broker
        stats: dict[str, QueueStats] = dict(self.call(broker.stats))
        workers = self.call(broker.workers)
        served = {q for w in workers for q in w.info.get("queues", [])}
        paused: set[str] = self.call(broker.paused)
        for name in (served | paused) - set(stats):
            stats[name] = QueueStats(paused=name in paused)
        rows = []
        for name, s in sorted(stats.items()):
            retries = self.total(name, "retries") if s.scheduled else 0
            rows.append(QueueRow(name, s, bool(s.ready or s.scheduled or s.in_flight)
                                 and name not in served, retries))
        return rows

    def purge(self, queue: str) -> int:
        """Delete the ready and scheduled messages of ``queue``."""
        count: int = self.call(self.app.broker.purge, queue)
        return count

    def pause(self, queue: str) -> None:
        """Workers stop fetching from ``queue`` within about a second; it keeps taking messages."""
        self.call(self.app.broker.pause, queue)

    def resume(self, queue: str) -> None:
        self.call(self.app.broker.resume, queue)

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
        """The ``seq`` of the newest worker event (0: none)."""
        newest: int = self.call(self.app.broker.newest_event_seq)
        return newest

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

    # -- listings: scheduled, retries, dead letters ----------------------------------------
    def total(self, queue: str, kind: Kind) -> int:
        """How many messages of ``kind`` ``queue`` holds (a count on the broker's index)."""
        page: Page = self.call(lambda: self.app.broker.browse(queue, kind, offset=0, limit=0))
        return page.total

    def listing(self, queue: str | None, kind: Kind, offset: int, limit: int) -> Listing:
        """A page of ``queue``'s messages of ``kind``; with no queue, of the first queue that
        has any (else the default queue)."""
        stats: dict[str, QueueStats] = self.call(self.app.broker.stats)
        if kind == "dead":
            queues = [(name, s.dead) for name, s in sorted(stats.items()) if s.dead]
        else:  # stats count every delayed message: count the kind where there are some
            queues = [(name, self.total(name, kind))
                      for name, s in sorted(stats.items()) if s.scheduled]
            queues = [(name, count) for name, count in queues if count]
        if queue is None:
            queue = queues[0][0] if queues else str(self.app.conf.task_default_queue)
        page: Page = self.call(
            lambda: self.app.broker.browse(queue, kind, offset=offset, limit=limit))
        if queue not in dict(queues):
            queues = sorted([*queues, (queue, page.total)])
        return Listing(queue, kind, page, limit, queues)

    def requeue_dead(self, queue: str, ids: list[str] | None) -> int:
        """Run dead letters of ``queue`` again (``None``: all of them)."""
        count: int = self.call(self.app.broker.requeue_dead, queue, ids)
        return count

    def delete(self, queue: str, kind: DeletableKind, ids: list[str] | None) -> int:
        """Delete messages of ``kind`` of ``queue`` (``None``: all of that kind)."""
        count: int = self.call(self.app.broker.delete_messages, queue, kind, ids)
        return count

    def run_now(self, queue: str, kind: Kind, ids: list[str] | None) -> int:
        """Make scheduled messages or retries of ``queue`` ready now; ``None``: all of
        ``kind``, a broker page at a time (each page made ready leaves the listing, so
        the next is again at offset 0; bounded by the count at the start, so messages
        arriving meanwhile cannot keep it going)."""
        broker = self.app.broker
        if ids is not None:
            count: int = self.call(broker.enqueue_now, queue, ids)
            return count
        done = 0
        rounds = self.total(queue, kind) // MAX_PAGE + 1
        for _ in range(rounds):
            page: Page = self.call(lambda: broker.browse(queue, kind, offset=0, limit=MAX_PAGE))
            if not page.items:
                if page.total and page.note:  # counted, not listed: cannot be chosen
                    raise BrokerError(f"cannot choose them: {page.note}")
                break
            moved: int = self.call(broker.enqueue_now, queue, [m.id for m in page.items])
            done += moved
            if not moved:
                break
        return done

    # -- tasks -----------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> tuple[list[TaskSummary], int]:
        """A page of the result backend's task index, newest first, and the total
        (raises :class:`~celeriac.exceptions.ConfigurationError` with ``result_index`` off)."""
        found: tuple[list[TaskSummary], int] = self.call(lambda: self.app.backend.search(
            task_id_prefix=query.task_id_prefix, name=query.name, state=query.state,
            offset=query.offset, limit=query.limit))
        return found

    def task_detail(self, task_id: str) -> TaskDetail | None:
        """The task's stored record with its lineage and children (no events: see
        :meth:`task_events`); None: no record stored, or it expired."""
        detail: TaskDetail | None = self.call(self.app.backend.task_detail, task_id)
        return detail

    def task_events(self, task_id: str, runs: int, scan: int | None) -> EventsRead:
        """The task's events from the broker's log, read newest first until its ``runs``
        are found, or the newest ``scan`` events (None: all those kept) were read."""
        found: EventsRead = self.call(
            lambda: read_task_events(self.app.broker, task_id, runs, scan=scan))
        return found

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
