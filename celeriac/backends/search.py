"""What the dashboard's Tasks page reads from a result backend: search and a task's detail.

Every backend keeps an **index** of its task records beside them, written by the same
store call and expiring with them (``result_expires``), so :meth:`ResultBackend.search
<celeriac.backends.base.ResultBackend.search>` costs O(page) plus index look-ups, never a
scan of all results: the Redis backend keeps sorted sets by state, by name and by both,
scored by the time of the store (:mod:`celeriac.backends.redis_index`); the SQLite
backend indexed columns of its ``results`` table; the memory backend, which is for tests
and one process, filters its dict.

What is indexed comes from the record: the task's **name** is always stored (workers
put it in every record, whether or not ``result_extended`` is on: it is a few bytes and
the dashboard cannot search without it); its **queue** and **worker**, and its
arguments, only with ``result_extended``. So are its lineage (``parent_id``,
``group_id``: stored whenever the task has one) and its delivery count (``deliveries``:
stored when the broker delivered the message more than once).

A task's **events** are not kept by the backend: :func:`task_events` reads them from the
broker's capped event log (the newest ``events_kept``, 10,000 by default, when workers
run with ``-E``), newest first and at most once through; a task whose events have been
pushed out of it, or that ran without ``-E``, has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.backends.base import ResultRecord
    from celeriac.brokers.base import Broker

#: A search by task id prefix looks at most at this many ids with that prefix (in id
#: order), then filters and orders them: enough for any prefix of a few characters of a
#: uuid among 100,000 results, and bounded whatever the prefix.
PREFIX_SCAN = 1000

#: The most rows one search returns.
MAX_LIMIT = 1000


@dataclass(frozen=True)
class TaskSummary:
    """One row of a task search."""

    task_id: str
    #: The task's name (None only in records written before names were indexed).
    task: str | None
    state: str
    #: Unix time it reached a ready state (or a RETRY); None while it has not.
    date_done: float | None
    #: Only with ``result_extended``.
    queue: str | None
    worker: str | None


@dataclass(frozen=True)
class TaskEvent:
    """One event of a task's timeline (Celery's event types: ``task-received``, ...)."""

    type: str
    time: float
    worker: str
    #: The event's fields (``runtime``, ``exception``, ``retries``...), raw.
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskDetail:
    """Everything the backend knows about one task, for its page."""

    #: The stored record itself: state, result or exception and traceback, retries,
    #: name, and with ``result_extended`` args, kwargs, worker and queue.
    record: ResultRecord
    #: The task that sent this one (a chain's previous step, the member that completed
    #: a chord's header for its body, the task that called ``delay``), if any.
    parent_id: str | None
    #: The group or chord header it belongs to, if any.
    group_id: str | None
    #: How many times the broker delivered it, when known (None: not recorded, which
    #: means once for a task that ran).
    deliveries: int | None
    #: Ids of the tasks it sent while it ran, and its follow-ups (a chain's next step,
    #: callbacks), in order; a group's members stand for the group.
    children: list[str]
    #: Its events, oldest first (empty when none are kept: see :func:`task_events`).
    events: list[TaskEvent]

    @property
    def summary(self) -> TaskSummary:
        return summary_of(self.record)


def check_page(offset: int, limit: int) -> None:
    if offset < 0 or limit < 0:
        raise ValueError(f"search: offset ({offset}) and limit ({limit}) must not be negative")
    if limit > MAX_LIMIT:
        raise ValueError(f"search: limit {limit} is over {MAX_LIMIT}")


def summary_of(record: ResultRecord) -> TaskSummary:
    return TaskSummary(task_id=record.task_id, task=record.name, state=record.status,
                       date_done=record.date_done, queue=record.queue, worker=record.worker)


def child_ids(children: Any) -> list[str]:
    """The task ids in a record's ``children`` (Celery's result tuples: ``[[id, parent],
    None]`` for a task, ``[[group_id, parent], [member tuples]]`` for a group)."""
    found: list[str] = []
    for child in children or ():
        if not isinstance(child, (list, tuple)) or len(child) != 2:
            continue
        head, members = child
        if isinstance(members, (list, tuple)):
            found.extend(child_ids(members))
        elif isinstance(head, (list, tuple)) and head and isinstance(head[0], str):
            found.append(head[0])
    return found


def detail_of(record: ResultRecord, events: list[TaskEvent]) -> TaskDetail:
    return TaskDetail(record=record, parent_id=record.parent_id, group_id=record.group_id,
                      deliveries=record.deliveries, children=child_ids(record.children),
                      events=events)


#: Events read per look at the broker's event log, newest chunk first.
EVENTS_CHUNK = 1000


@dataclass(frozen=True)
class EventsRead:
    """A task's events as :func:`read_task_events` found them."""

    #: Oldest first.
    events: list[TaskEvent]
    #: The read stopped at its ``scan`` bound, before the oldest event kept, without
    #: finding every run: older events of the task may be in the log.
    partial: bool


def read_task_events(broker: Broker, task_id: str, runs: int = 1, *,
                     scan: int | None = None) -> EventsRead:
    """The events of ``task_id`` in ``broker``'s capped event log, oldest first.

    The log is read newest chunk first (:data:`EVENTS_CHUNK` events a read), filtered
    here by the events' ``uuid``, and the read stops once a ``task-received`` of each of
    the task's ``runs`` (its retries + 1) was found: a task that ran lately costs a
    read or two after finding the newest ``seq`` (:meth:`Broker.newest_event_seq
    <celeriac.brokers.base.Broker.newest_event_seq>`: one read on every broker we
    ship). Otherwise it goes on to the oldest event kept: at most
    ``broker.events_kept`` events (10,000 by default): 140 ms on Redis for small events
    on a loaded 2-core machine, several times that for events carrying tracebacks or
    stacks; SQLite picks the task's rows in SQL (:meth:`Broker.events_of
    <celeriac.brokers.base.Broker.events_of>`), 33 ms for 10,000 events with stacks
    against 85 ms to read and decode them all. ``scan`` bounds it to the newest ``scan``
    events (a page that must answer quickly), and the answer says whether that stopped
    it short (``partial``).
    """
    high = broker.newest_event_seq()
    kept_from = max(0, high - broker.events_kept)
    oldest = kept_from if scan is None else max(kept_from, high - scan)
    found: list[TaskEvent] = []
    received = 0
    while high > oldest and received < runs:
        low = max(oldest, high - EVENTS_CHUNK)
        mine = [TaskEvent(type=event.type, time=event.time, worker=event.worker,
                          fields=dict(event.data))
                for event in broker.events_of(task_id, low, high)]
        received += sum(event.type == "task-received" for event in mine)
        found[:0] = mine
        high = low
    return EventsRead(found, partial=received < runs and oldest > kept_from)


def task_events(broker: Broker, task_id: str, runs: int = 1) -> list[TaskEvent]:
    """The events of ``task_id`` in ``broker``'s event log, read back as far as its
    ``runs`` or the oldest event kept (:func:`read_task_events` without a bound)."""
    return read_task_events(broker, task_id, runs).events
