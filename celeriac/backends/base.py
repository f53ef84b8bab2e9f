"""The result-backend interface.

A backend stores one record per task id: its state and, once finished, its
return value or the description of its exception. Records are plain JSON
objects (see :class:`ResultRecord`), so any process can read them without
importing the task's code. ``tests/contract/test_backend.py`` runs over every
implementation.

Beside task records a backend keeps two things for the canvas:

* **saved groups** (``save_group``/``restore_group``/``delete_group``): a
  ``GroupResult``'s member ids, for ``GroupResult.save()``/``restore()``;
* **chord state** (``chord_join``, ``chord_members``, ``chord_done``,
  ``chord_claim_body``): the atomic counter that lets the member which completes a
  chord's header send the body exactly once, with no polling task. The protocol the
  worker follows with these calls is in ``docs/canvas-chords.md``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac import fastjson, serialization
from celeriac.backends.search import TaskDetail, TaskSummary, detail_of, task_events
from celeriac.exceptions import BackendError, ConfigurationError, SerializationError, TimeoutError
from celeriac.states import PENDING, READY_STATES

if TYPE_CHECKING:
    from celeriac.brokers.base import Broker


@dataclass
class ResultRecord:
    """What a backend stores for a task."""

    task_id: str
    status: str = PENDING
    #: The return value (SUCCESS) -- any JSON value, or a datetime, date, time, Decimal,
    #: UUID or bytes (stored with kombu's markers, :mod:`celeriac.serialization`).
    result: Any = None
    #: For FAILURE/RETRY/REVOKED: the exception's type name and message.
    exc_type: str | None = None
    exc_message: str | None = None
    traceback: str | None = None
    name: str | None = None
    retries: int = 0
    #: Unix time the record was stored in a ready state (or a RETRY).
    date_done: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The module of the exception's class (``myapp.errors``), so a client that imported
    #: that module gets the class back (:func:`celeriac.result.exception_from_record`),
    #: and the exception's ``args`` when JSON could carry them. None in older records.
    exc_module: str | None = None
    exc_args: list[Any] | None = None
    #: Results of the tasks this one sent while it ran, as Celery's result tuples:
    #: ``[[id, None], None]`` for a task, ``[[group_id, None], [tuples...]]`` for a group.
    children: list[Any] | None = None
    #: The call's arguments, worker and queue: only with ``result_extended``.
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    worker: str | None = None
    queue: str | None = None
    #: Lineage, whenever the task has one (not only with ``result_extended``): the task
    #: that sent it and the group or chord header it belongs to.
    parent_id: str | None = None
    group_id: str | None = None
    #: How many times the broker delivered the message, when more than once.
    deliveries: int | None = None

    @property
    def ready(self) -> bool:
        return self.status in READY_STATES

    def to_dict(self) -> dict[str, Any]:
        data = {
            "task_id": self.task_id, "status": self.status, "result": self.result,
            "exc_type": self.exc_type, "exc_message": self.exc_message,
            "traceback": self.traceback, "name": self.name, "retries": self.retries,
            "date_done": self.date_done, "extra": self.extra,
        }
        # The later fields only when set: most records have none of them, and every
        # byte of a record is written and read once per task.
        for key in _OPTIONAL:
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    def to_json(self) -> str:
        """The stored form: JSON, with markers for the types JSON lacks, escaped to ASCII.
        NaN and Infinity are refused: other readers would choke on them."""
        data = self.to_dict()
        plain = fastjson.plain_ascii(data)  # most records
        if plain is not None:
            return plain
        try:
            return serialization.json_dumps(data, ascii_only=True)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"result of task {self.task_id} is not JSON-serialisable: {exc}") from exc

    @classmethod
    def from_json(cls, payload: str | bytes, where: str) -> ResultRecord:
        """Parse a stored record; ``where`` names the store in the error (a malformed
        marker is a :class:`~celeriac.serialization.MarkerError`, a ``ValueError``)."""
        try:
            return cls.from_dict(serialization.json_loads(payload))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise BackendError(f"{where}: corrupt result record: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        return cls(
            task_id=str(data["task_id"]), status=str(data.get("status", PENDING)),
            result=data.get("result"), exc_type=data.get("exc_type"),
            exc_message=data.get("exc_message"), traceback=data.get("traceback"),
            name=data.get("name"), retries=int(data.get("retries") or 0),
            date_done=data.get("date_done"), extra=dict(data.get("extra") or {}),
            # Absent from records written before these fields existed: None.
            exc_module=data.get("exc_module"), exc_args=_list_or_none(data.get("exc_args")),
            children=_list_or_none(data.get("children")), args=_list_or_none(data.get("args")),
            kwargs=data.get("kwargs"), worker=data.get("worker"), queue=data.get("queue"),
            parent_id=data.get("parent_id"), group_id=data.get("group_id"),
            deliveries=data.get("deliveries"),
        )


#: Fields written only when not None (see :meth:`ResultRecord.to_dict`).
_OPTIONAL = ("exc_module", "exc_args", "children", "args", "kwargs", "worker", "queue",
             "parent_id", "group_id", "deliveries")


def _list_or_none(value: Any) -> list[Any] | None:
    return None if value is None else list(value)


class ResultBackend(ABC):
    """Stores and fetches task results."""

    schemes: tuple[str, ...] = ()
    #: True when the store deletes expired records itself, so :meth:`cleanup` finds none.
    expires_itself: bool = False

    def __init__(self, url: str, *, expires: float = 86400.0, index: bool = True) -> None:
        self.url = url
        #: Seconds a record is kept after it is stored.
        self.expires = expires
        #: Whether stores keep the task index :meth:`search` reads (``result_index``).
        self.index = index

    @abstractmethod
    def store(self, record: ResultRecord) -> None:
        """Write ``record``, replacing any earlier record of the same task id, except
        that a ready record (SUCCESS, FAILURE, REVOKED) is never replaced by one that is
        not ready (STARTED, RETRY, a custom state), as Celery's backends refuse to
        overwrite a success. Without this a retry's new run, sent before the RETRY of
        the run that asked for it is stored, could store SUCCESS first and then see it
        overwritten by RETRY: ``get()`` would wait for ever. Atomic per record."""

    def store_many(self, records: Sequence[ResultRecord]) -> None:
        """Write several records; backends override this to batch."""
        for record in records:
            self.store(record)

    @abstractmethod
    def get(self, task_id: str) -> ResultRecord | None:
        """The stored record, or None (PENDING) when there is none or it expired."""

    def get_many(self, task_ids: Sequence[str]) -> list[ResultRecord | None]:
        """The records of ``task_ids``, in order (None where :meth:`get` gives None); backends
        override this to read all in one round trip (a chord's body reads its whole header)."""
        return [self.get(task_id) for task_id in task_ids]

    def wait(self, task_id: str, timeout: float | None = None,
             interval: float = 0.005) -> ResultRecord:
        """Block until the task is in a ready state; raise :class:`TimeoutError` after ``timeout``.

        The default polls with a growing interval (5 ms up to 100 ms), which suits
        backends that cannot push; backends that can (Redis) override it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.get(task_id)
            if record is not None and record.ready:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"result of {task_id} not ready after {timeout}s")
            pause = interval
            if deadline is not None:
                pause = min(interval, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            interval = min(interval * 1.5, 0.1)

    @abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete the record of ``task_id`` (and its index entries)."""

    # -- the dashboard's Tasks page (celeriac.backends.search) -------------------------
    @abstractmethod
    def search(self, *, task_id_prefix: str | None = None, name: str | None = None,
               state: str | None = None, offset: int = 0,
               limit: int = 50) -> tuple[list[TaskSummary], int]:
        """The live records matching every filter given, newest store first, ``limit``
        of them from ``offset``; and how many match in all.

        Served by the index the backend keeps with its records (O(page) plus index
        look-ups, never a scan of all results). ``name`` and ``state`` match exactly;
        ``task_id_prefix`` looks at the first :data:`~celeriac.backends.search.PREFIX_SCAN`
        ids with that prefix only. A task's place in the order is the time its record
        was last stored (STARTED, then SUCCESS moves it to the front).

        Raises :class:`~celeriac.exceptions.ConfigurationError` when the backend was
        built with ``index=False`` (``result_index``): it keeps no index to read."""

    def _check_index(self) -> None:
        """Refuse a search on a backend that keeps no index (every :meth:`search` calls it)."""
        if not self.index:
            raise ConfigurationError(
                "task search needs the task index, which result_index=False turns off: "
                "set result_index=True (in every process that stores results) to search")

    def task_detail(self, task_id: str, *, broker: Broker | None = None) -> TaskDetail | None:
        """Everything known about ``task_id`` (None: no live record): the record, its
        lineage and children, and with ``broker`` its events from the broker's capped
        event log (:func:`~celeriac.backends.search.task_events`)."""
        record = self.get(task_id)
        if record is None:
            return None
        events = [] if broker is None else task_events(broker, task_id, record.retries + 1)
        return detail_of(record, events)

    @abstractmethod
    def cleanup(self) -> int:
        """Delete expired records (and expired saved groups and chord state); return how
        many task records went."""

    def _ttl(self, expires: float | None) -> float:
        """Seconds chord state is kept: ``expires`` if given, else the backend's own."""
        return self.expires if expires is None else expires

    # -- saved groups (GroupResult.save / restore / delete) ------------------------------------
    @abstractmethod
    def save_group(self, group_id: str, members: Any) -> None:
        """Store a group's member results in Celery's tuple form (``GroupResult.as_tuple()``'s
        second item), replacing an earlier save; kept ``expires`` seconds like a record."""

    @abstractmethod
    def restore_group(self, group_id: str) -> Any:
        """The member tuples given to :meth:`save_group`, or None (never saved, deleted, expired)."""

    @abstractmethod
    def delete_group(self, group_id: str) -> None:
        """Delete a saved group (an unknown id is not an error)."""

    # -- chords: the exactly-once join (protocol: docs/canvas-chords.md) -----------------------
    @abstractmethod
    def chord_join(self, group_id: str, index: int, result_id: str, size: int, *,
                   expires: float | None = None) -> bool:
        """Record that header member ``index`` (0 <= index < size) of chord ``group_id``,
        whose result is stored under ``result_id``, has finished; True means "send the body".

        One atomic step (a Lua script, one SQLite transaction, one lock): add the member if
        its index is not recorded yet (a redelivered member counts once; the first
        ``result_id`` of an index stays), count the members, and if the count reached
        ``size`` and no member fired yet, record this index as the one that fired. It
        returns True to the call that completed the header, and again to a later call
        with *that same index* while :meth:`chord_done` has not been called: the firing
        member's message is redelivered only if its worker died before acking, that is,
        maybe before the body was sent. Every other call gets False. ``size`` must be the
        same in every call (ValueError otherwise). The state is kept ``expires`` seconds
        (default: the backend's ``expires``) after the latest call.
        """

    @abstractmethod
    def chord_members(self, group_id: str) -> list[str] | None:
        """The ``result_id`` of every joined member in header order, or None if the chord
        has no state (never joined, or expired). Complete once a join returned True."""

    @abstractmethod
    def chord_done(self, group_id: str) -> None:
        """Confirm the body was sent: from now on every :meth:`chord_join` of this chord
        returns False. The state stays until it expires, so a late duplicate of a member
        cannot start the chord over."""

    @abstractmethod
    def chord_forget(self, group_id: str) -> None:
        """Delete the chord's state (members, fired, done, body claim): for a client that
        sends a chord again under the same group id (a frozen chord applied twice), before
        it sends the header; otherwise the earlier run's ``done`` would keep it from firing."""

    def celery_chord_size(self, group_id: str) -> int | None:
        """The header size Celery's client recorded for chord ``group_id`` when it sent it,
        for a member whose message does not carry one (Celery 5's messages do not): its
        Redis backend writes ``celery-taskset-meta-<group id>.s`` (unprefixed), which the
        Redis backend reads on the same server. None: not known (every other backend)."""
        return None

    @abstractmethod
    def chord_claim_body(self, group_id: str, token: str, *,
                         expires: float | None = None) -> bool:
        """Claim the run of chord ``group_id``'s body for the message carrying ``token``
        (a random id the firing member puts on the body message it sends). True for the
        first token claimed and for that token again (a redelivery of the same message);
        False for any other token: a second copy of the body, sent by a firing member
        that died between sending and :meth:`chord_done`, is dropped unrun."""

    @staticmethod
    def _check_member(group_id: str, index: int, size: int) -> None:
        if size < 1 or not 0 <= index < size:
            raise ValueError(f"chord {group_id}: member index {index} is not in 0..{size - 1} "
                             f"(size {size})")

    @staticmethod
    def _size_mismatch(group_id: str, size: int, recorded: int) -> ValueError:
        return ValueError(f"chord {group_id}: joined with size {size}, but its first member "
                          f"recorded size {recorded}")

    def ping(self) -> None:  # noqa: B027 - optional hook
        """Check the backend is reachable; raise :class:`BackendError` if not."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections held by this process."""
