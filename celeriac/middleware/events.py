"""Task events: what monitors (``celeriac events``, dashboards) learn about each task.

With ``celeriac worker -E`` (the ``worker_send_task_events`` setting) every worker
process publishes Celery's task events to the broker's event stream
(:meth:`Broker.emit <celeriac.brokers.base.Broker.emit>`, the same capped stream
and cursor as the supervisor's worker events), and the supervisor adds a
``worker-heartbeat`` on each heartbeat; with ``task_send_sent_event`` producers
publish ``task-sent``. Event types and the fields of ``data`` are Celery's (its
monitoring guide, "Event Reference"); ``docs/monitoring.md`` lists them.

Three middleware, one per kind of process, each added to its pipeline only when
its setting is on, so a worker without ``-E`` pays nothing:

* :class:`TaskEvents` (a worker process) encodes each event as tasks move
  (:func:`~celeriac.brokers.base.encode_event`: while its fields are fresh in the
  CPU's cache, and what waits is bytes, which the garbage collector does not walk)
  and publishes them with one ``emit_encoded`` call per batch, every
  :data:`FLUSH_INTERVAL`, sooner once :data:`FLUSH_SIZE` are waiting, and when the
  process stops. A worker process publishes from a service beside its consumer's loop
  (:meth:`Pool.start_service <celeriac.pools.base.Pool.start_service>`: a greenlet on
  the green pools, a thread elsewhere), so the loop never waits for the broker's
  answer: while it waited, it neither settled nor fetched (with the loop publishing,
  a no-op at ``-c 100`` ran 0.84-0.85 times as fast with ``-E``; from a greenlet,
  0.87-0.88, three alternated runs each). Jobs append from their own threads or
  greenlets and only one drainer pops, through a ``deque`` (whose ``append`` and
  ``popleft`` are atomic), so no lock is taken per event;
* :class:`NodeEvents` (the supervisor) publishes ``worker-heartbeat``, and
  ``task-revoked`` for a task it stopped by replacing the process running it;
* :class:`SentEvents` (any producer) publishes ``task-sent``, one ``emit`` per
  publish call (a group of a thousand tasks is one call).

Events are for watching, not for correctness: a batch the broker refuses is
logged and dropped, and never fails a task, an ack or a publish.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from celeriac import __version__
from celeriac.brokers.base import Broker, WorkerEvent, encode_event
from celeriac.message import REPR_LIMIT
from celeriac.middleware.base import Middleware, Rejection, TaskRun
from celeriac.states import FAILURE, REJECTED, RETRY, REVOKED, SUCCESS
from celeriac.worker.spec import WorkerSpec

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.message import Envelope
    from celeriac.pools.base import EventLike, Pool
    from celeriac.worker.supervisor import Supervisor

log = logging.getLogger("celeriac.events")

#: Events a worker process buffers before it publishes them without waiting for the interval.
FLUSH_SIZE = 200
#: Longest a buffered event waits before it is published (seconds; the consumer loop
#: ticks at least every 50 ms, so an event is visible within about this long).
FLUSH_INTERVAL = 0.2
#: Events waiting, in batches of FLUSH_SIZE, past which the consumer's loop waits for the
#: publisher (up to DRAIN_WAIT seconds a turn): memory stays bounded, and a broker too
#: slow for the events slows the worker down as it did when the loop published them.
BACKLOG_BATCHES = 10
DRAIN_WAIT = 1.0
#: How long a stopping worker process waits for its publisher's last batch.
STOP_WAIT = 5.0

#: Task event type -> the task state it reports (Celery's ``TASK_EVENT_TO_STATE``).
TASK_STATES: dict[str, str] = {
    "task-sent": "PENDING",
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}
#: Every event type celeriac records: the task events above, then the worker events
#: (the supervisor's own, and ``worker-heartbeat`` with ``-E``).
EVENT_TYPES: tuple[str, ...] = (*TASK_STATES, "worker-online", "worker-heartbeat",
                                "worker-offline", "task-blocked", "task-unblocked")

#: The software fields of Celery's worker events (``sw_ident`` is ``py-celery`` there).
SOFTWARE = {"sw_ident": "py-celeriac", "sw_ver": __version__, "sw_sys": platform.system()}


def utcoffset() -> int:
    """Hours west of UTC, as Celery's worker events carry it (``utcoffset``), DST included."""
    return (time.altzone if time.localtime().tm_isdst else time.timezone) // 3600


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to :data:`REPR_LIMIT` characters (Celery's ``resultrepr_maxsize``)."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the event
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT - 3] + "..."


def signal_number(name: str | None) -> int | None:
    """``"SIGTERM"`` -> 15: Celery's ``task-revoked`` carries the signal as ``signum``."""
    if not name:
        return None
    try:
        return int(signal.Signals[name.upper()])
    except KeyError:
        return None


def emit_now(broker: Broker, events: list[WorkerEvent]) -> None:
    """Publish ``events`` in one call; a failure is logged, never raised."""
    try:
        broker.emit(events)
    except Exception as exc:
        log.warning("could not record %d event(s) (%s): %s; they are dropped", len(events),
                    events[0].type, exc)


def finished_event(run: TaskRun, node: str) -> WorkerEvent | None:
    """The event for how a run ended: task-succeeded, -failed (a ``Reject`` not requeued
    too), -retried or -revoked; None for an ``Ignore`` (Celery sends none)."""
    found = finished(run, node, time.time())
    return None if found is None else WorkerEvent(found[0], node, found[1], found[1]["timestamp"])


def finished(run: TaskRun, node: str, now: float) -> tuple[str, dict[str, Any]] | None:
    """The type and data of :func:`finished_event`."""
    record = run.record
    if record is None:
        return None
    data: dict[str, Any] = {"uuid": run.request.id, "name": run.name, "hostname": node,
                            "timestamp": now, "runtime": run.runtime}
    status = record.status
    if status == SUCCESS:
        kind = "task-succeeded"
        data["result"] = short_repr(run.retval)
    elif status in (FAILURE, RETRY) or (status == REJECTED and not run.requeue):
        kind = "task-retried" if status == RETRY else "task-failed"
        einfo = run.einfo
        if einfo is not None:
            data["exception"] = short_repr(einfo.exception)
            data["traceback"] = einfo.traceback
        else:
            data["exception"] = f"{record.exc_type}({record.exc_message!r})"
            data["traceback"] = record.traceback or ""
    elif status == REVOKED:
        kind = "task-revoked"
        data["terminated"] = True
        data["signum"] = signal_number(run.signal)
        data["expired"] = False
    else:
        return None
    return kind, data


@dataclass
class _Publisher:
    """A worker process's event publisher (:meth:`TaskEvents._publish`, a pool service)."""

    #: Set to wake it; it sets ``drained`` after each batch.
    wake: EventLike
    drained: EventLike
    #: Its ``join`` (:meth:`Pool.start_service <celeriac.pools.base.Pool.start_service>`).
    join: Callable[[float | None], bool]


class TaskEvents(Middleware):
    """A worker process's task events, buffered and published in batches.

    ``data`` of every event carries ``uuid`` (the task id), ``name`` (celeriac adds it
    to every task event, not only ``task-received``, so ``celeriac events --task``
    can filter any of them), ``hostname`` (the node name) and ``timestamp``, plus the
    fields of its type (``pid`` of this worker process on ``task-started``, as in
    Celery's reference). Nothing more: three of these per task, each JSON-encoded and
    stored by the broker, are what ``-E`` costs.
    """

    def __init__(self, broker: Broker, node: str, *, pool: Pool | None = None,
                 flush_size: int = FLUSH_SIZE, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.broker = broker
        self.node = node
        self.flush_size = flush_size
        self.flush_interval = flush_interval
        self.pid = os.getpid()
        #: Events not published yet, encoded, oldest first (appended by jobs, drained by
        #: the publisher, or by the loop where there is none).
        self.buffer: deque[bytes] = deque()
        #: time.monotonic() after which a tick publishes whatever is buffered (no publisher).
        self._due = 0.0
        #: The pool whose service publishes (:meth:`process_started`); None: the loop does.
        self._pool = pool
        #: The running publisher (made by process_started); None: the loop publishes.
        self._publisher: _Publisher | None = None
        self._stopping = False

    def _data(self, run: TaskRun, now: float) -> dict[str, Any]:
        """The fields every task event has; each hook adds its own (one dict per event:
        this runs three times per task)."""
        return {"uuid": run.request.id, "name": run.name, "hostname": self.node,
                "timestamp": now}

    def _add(self, kind: str, data: dict[str, Any], now: float) -> None:
        self.buffer.append(encode_event(kind, self.node, data, now))

    # -- publishing ---------------------------------------------------------------------
    def tick(self) -> None:
        buffer = self.buffer
        if not buffer:
            return
        waiting = len(buffer)
        publisher = self._publisher
        if publisher is None:
            if waiting >= self.flush_size or time.monotonic() >= self._due:
                self.flush()
        elif waiting < self.flush_size * BACKLOG_BATCHES:
            if waiting >= self.flush_size:
                publisher.wake.set()
        elif publisher.join(0):
            # The publisher has ended (killed: it survives any Exception), so nothing
            # would ever drain: the loop publishes from now on.
            log.warning("the task event publisher has stopped; the consumer's loop "
                        "publishes the events from now on")
            self._publisher = None
            self.flush()
        else:
            publisher.drained.clear()
            publisher.wake.set()
            publisher.drained.wait(DRAIN_WAIT)

    def flush(self) -> None:
        """Publish everything buffered so far as one batch (one ``emit`` call)."""
        self._due = time.monotonic() + self.flush_interval
        buffer = self.buffer
        lines = []
        try:
            for _ in range(len(buffer)):
                lines.append(buffer.popleft())
        except IndexError:  # a stopping process's loop drained it meanwhile
            pass
        if not lines:
            return
        try:
            self.broker.emit_encoded(lines)
        except Exception as exc:
            log.warning("could not record %d task event(s): %s; they are dropped",
                        len(lines), exc)

    def _publish(self, wake: EventLike, drained: EventLike) -> None:
        """The publisher: a batch every :attr:`flush_interval`, or as soon as woken."""
        while not self._stopping:
            wake.wait(self.flush_interval)
            wake.clear()
            try:
                self.flush()
            except Exception:  # flush logs a refused batch; anything else must not end this
                log.exception("publishing task events failed")
            drained.set()

    def process_started(self, app: Celeriac) -> None:
        self._due = time.monotonic() + self.flush_interval
        if self._pool is not None:
            wake, drained = self._pool.event(), self._pool.event()
            join = self._pool.start_service(partial(self._publish, wake, drained),
                                            "celeriac-events")
            self._publisher = _Publisher(wake, drained, join)

    def process_stopping(self, app: Celeriac, exitcode: int) -> None:
        if self._publisher is not None:
            self._stopping = True
            self._publisher.wake.set()
            if not self._publisher.join(STOP_WAIT):
                log.warning("the task event publisher did not stop within %.0f s", STOP_WAIT)
        self.flush()

    # -- one message --------------------------------------------------------------------
    def message_received(self, run: TaskRun) -> None:
        request = run.request
        headers = run.message.headers if run.message is not None else {}
        now = time.time()
        data = self._data(run, now)
        data["args"] = headers.get("argsrepr") or short_repr(request.args)
        data["kwargs"] = headers.get("kwargsrepr") or short_repr(request.kwargs)
        data["root_id"] = request.root_id
        data["parent_id"] = request.parent_id
        data["retries"] = request.retries
        data["eta"] = headers.get("eta")
        data["expires"] = headers.get("expires")
        self._add("task-received", data, now)

    def message_rejected(self, rejection: Rejection) -> None:
        # Unknown tasks and malformed messages are dead-lettered (requeue False); a message
        # the worker failed around is delivered again later (requeue True).
        now = time.time()
        data = {"uuid": rejection.task_id, "name": rejection.task_name, "hostname": self.node,
                "timestamp": now, "pid": self.pid, "requeue": rejection.kind == "internal",
                "reason": rejection.reason}
        self._add("task-rejected", data, now)

    def task_skipped(self, run: TaskRun) -> None:
        now = time.time()
        data = self._data(run, now)
        data["terminated"] = False
        data["signum"] = None
        data["expired"] = run.revoked == "expired"
        self._add("task-revoked", data, now)

    def before_task(self, run: TaskRun) -> None:
        now = time.time()
        data = self._data(run, now)
        data["pid"] = self.pid
        self._add("task-started", data, now)

    def after_task(self, run: TaskRun) -> None:
        now = time.time()
        found = finished(run, self.node, now)
        if found is not None:
            self._add(found[0], found[1], now)
        record = run.record
        if record is not None and record.status == REJECTED and run.task.acks_late:
            # The task raised Reject: its message is requeued or dead-lettered (after
            # task-failed above when it is not requeued), as Celery's worker reports it.
            data = self._data(run, now)
            data["pid"] = self.pid
            data["requeue"] = run.requeue
            data["reason"] = record.exc_message
            self._add("task-rejected", data, now)


def worker_task_events(app: Celeriac, consumer: object, pool: Pool | None = None) -> TaskEvents:
    """The :class:`TaskEvents` of a worker process, named after its node (the consumer's
    ``spec.node``, as the supervisor's events are), published by a service of ``pool``."""
    spec = getattr(consumer, "spec", None)
    node = (spec.node if isinstance(spec, WorkerSpec)
            else f"celeriac.{os.getpid()}@{socket.gethostname()}")
    return TaskEvents(app.broker, node, pool=pool)


class NodeEvents(Middleware):
    """The supervisor's part of ``-E``: ``worker-heartbeat`` on each heartbeat (none with
    ``--without-heartbeat``), and the end of a task the supervisor ended itself, which its
    process cannot report:
    ``task-revoked`` for a terminate by replacing the process (prefork, solo),
    ``task-failed`` for a hard time limit or a last delivery lost with its process."""

    def __init__(self) -> None:
        self.node = ""
        self.broker: Broker | None = None

    def node_starting(self, supervisor: Supervisor) -> None:
        self.node = supervisor.node
        self.broker = supervisor.app.broker

    def heartbeat(self, supervisor: Supervisor, info: dict[str, Any]) -> None:
        if not supervisor.options.heartbeat_events:  # --without-heartbeat, as in Celery
            return
        now = time.time()
        load = [round(value, 2) for value in os.getloadavg()]
        data = {
            "hostname": supervisor.node, "timestamp": now, "pid": os.getpid(),
            "utcoffset": utcoffset(), "freq": float(supervisor.app.conf.worker_heartbeat_interval),
            "active": info.get("running", 0), "processed": info.get("processed", 0),
            "loadavg": load, "pool": info.get("pool"), **SOFTWARE,
        }
        emit_now(supervisor.app.broker,
                 [WorkerEvent(type="worker-heartbeat", worker=supervisor.node, data=data, time=now)])

    def after_task(self, run: TaskRun) -> None:
        """A task the supervisor ended itself (terminated by replacing its process, failed at
        its hard time limit or on a last delivery lost with its process)."""
        if self.broker is None:
            return
        event = finished_event(run, self.node)
        if event is not None:
            emit_now(self.broker, [event])


class SentEvents(Middleware):
    """A producer's ``task-sent`` events (``task_send_sent_event``): one per message,
    published together after each publish call."""

    def after_publish(self, app: Celeriac, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        now = time.time()
        origin = f"gen{os.getpid()}@{socket.gethostname()}"
        common = {"hostname": origin, "timestamp": now, "pid": os.getpid(), "exchange": ""}
        events = []
        for envelope in envelopes:
            headers = envelope.headers
            data = {
                "uuid": headers.get("id"), "name": headers.get("task"),
                "args": headers.get("argsrepr"), "kwargs": headers.get("kwargsrepr"),
                "retries": headers.get("retries", 0), "eta": headers.get("eta"),
                "expires": headers.get("expires"), "queue": envelope.queue,
                "routing_key": envelope.queue, "root_id": headers.get("root_id"),
                "parent_id": headers.get("parent_id"), **common,
            }
            events.append(WorkerEvent(type="task-sent", worker=origin, data=data, time=now))
        emit_now(app.broker, events)
