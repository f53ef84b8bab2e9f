"""Handles on task results: :class:`AsyncResult`, the local :class:`EagerResult`, and
(from :mod:`celeriac.resultset`) :class:`ResultSet` and :class:`GroupResult`.

Waiting (``get()``) takes Celery's keyword arguments; see :meth:`AsyncResult.get` for
which act here and which are accepted without effect (each of those logs a DEBUG line
when given a value that would matter in Celery).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac import states
from celeriac.backends.base import ResultRecord
from celeriac.context import current_request
from celeriac.exceptions import (
    REMOTE_SAFE_ERRORS,
    IncompleteStream,
    SyncSubtaskError,
    TaskError,
    TimeoutError,
)
from celeriac.resultset import GroupResult, ResultSet
from celeriac.states import FAILURE, IGNORED, PENDING, READY_STATES, REJECTED, SUCCESS

if TYPE_CHECKING:
    from celeriac.app import Celeriac

R = TypeVar("R")

log = logging.getLogger("celeriac.result")

E_WOULD_BLOCK = ("Never call result.get() within a task: waiting for another task in a "
                 "worker can deadlock the pool (every slot waiting on tasks no slot is "
                 "free to run). Chain the work instead, or pass disable_sync_subtasks=False.")


#: Inside :func:`allow_join_result`: a running task may wait on results.
_join_allowed: ContextVar[bool] = ContextVar("celeriac_join_allowed", default=False)


def check_can_block() -> None:
    """Refuse to wait inside a task a worker is running, as Celery does
    (``disable_sync_subtasks``); an eager run may wait, its subtasks ran already, and so
    may code inside :func:`allow_join_result`."""
    request = current_request.get()
    if request is not None and request.id and not request.is_eager and not _join_allowed.get():
        raise SyncSubtaskError(E_WOULD_BLOCK)


@contextlib.contextmanager
def allow_join_result() -> Iterator[None]:
    """Let a running task wait on results inside this block (Celery's ``allow_join_result``):
    ``with allow_join_result(): value = other.delay().get()``. The deadlock it risks is
    the caller's to rule out (enough free slots, or another queue's workers)."""
    token = _join_allowed.set(True)
    try:
        yield
    finally:
        _join_allowed.reset(token)


@contextlib.contextmanager
def denied_join_result() -> Iterator[None]:
    """The opposite (Celery's ``denied_join_result``): waiting refused again inside an
    :func:`allow_join_result` block."""
    token = _join_allowed.set(False)
    try:
        yield
    finally:
        _join_allowed.reset(token)


def _before_wait(disable_sync_subtasks: bool, no_ack: bool, follow_parents: bool) -> None:
    """What every ``get()`` checks first: not inside a worker's task (unless allowed), and
    a DEBUG line for Celery's options given a value that has no meaning here."""
    if disable_sync_subtasks:
        check_can_block()
    for name, given in (("no_ack", not no_ack), ("follow_parents", not follow_parents)):
        if given:
            log.debug("get(%s=...) is accepted for Celery's signature and has no effect in "
                      "celeriac (docs/migrating.md, Results)", name)


#: celeriac's own errors are rebuilt from their message (their args hold a formatted one).
_OWN_ERRORS = frozenset(REMOTE_SAFE_ERRORS.values())


def _exception_class(module: str | None, name: str) -> type[BaseException] | None:
    """The class a record names, if this process has it already.

    Looked up in :data:`sys.modules` only, never imported: the name comes from the
    result store, and importing what it names would let anyone who can write there run
    code here (CVE-2021-23727 in Celery). ``vars()`` rather than ``getattr`` so that a
    module's ``__getattr__`` (which may import lazily) is not called either.
    """
    if module in (None, "celeriac.exceptions") and name in REMOTE_SAFE_ERRORS:
        return REMOTE_SAFE_ERRORS[name]
    if module is None:  # a record written before exc_module existed: builtins only
        found: Any = getattr(builtins, name, None)
    else:
        where = sys.modules.get(module)
        try:
            found = vars(where).get(name) if where is not None else None
        except TypeError:  # something without a __dict__ put in sys.modules
            found = None
    if isinstance(found, type) and issubclass(found, BaseException) and found is not TaskError:
        return found
    return None


def exception_from_record(record: ResultRecord) -> BaseException:
    """Re-create a task's exception from what the worker stored.

    The task's own class comes back when this process has already imported its module
    (see :func:`_exception_class`), built from the stored ``args`` when they were
    stored, else from the message; builtins and celeriac's errors always come back.
    Anything else, or a class whose constructor refuses those arguments, is a
    :class:`TaskError` carrying the original type name, message and traceback.
    """
    name = record.exc_type or "Exception"
    message = record.exc_message or ""
    cls = _exception_class(record.exc_module, name)
    exc: BaseException
    try:
        if cls is None:
            raise TypeError(name)
        if record.exc_args is not None and cls not in _OWN_ERRORS:
            exc = cls(*record.exc_args)
        else:
            exc = cls(message) if message else cls()
    except Exception:
        exc = TaskError(name, message, record.traceback)
    if record.traceback and hasattr(exc, "add_note"):
        exc.add_note(f"Remote traceback:\n{record.traceback}")
    return exc


def result_from_tuple(value: Any, app: Celeriac) -> AsyncResult[Any] | GroupResult[Any]:
    """A result from Celery's tuple form (``[[id, parent], None]`` for a task,
    ``[[id, parent], [members...]]`` for a group), as children are stored."""
    (task_id, _parent), members = value
    if members is not None:
        # celeriac's groups hold tasks, not groups: every member is one task's tuple.
        return GroupResult(task_id, [AsyncResult(str(m[0][0]), app) for m in members], app=app)
    return AsyncResult(str(task_id), app)


def add_to_parent(result: AsyncResult[Any] | GroupResult[Any],
                  replacing: list[AsyncResult[Any]] | None = None) -> None:
    """Record ``result`` as a child of the task running here, if any (Celery's
    ``add_to_parent``/``trail``); ``replacing``: members of a group that were recorded
    one by one as they ran eagerly, now to be one group."""
    request = current_request.get()
    # A retry sends the task again under its own id: not a child of itself (collect()
    # would go round forever).
    if request is None or not request.id or getattr(result, "id", None) == request.id:
        return
    # trail=False on the running task (a decorator keyword or class attribute, which
    # Celery has too) keeps its children out of its result.
    parent = result.app.tasks.get(request.task)
    if parent is not None and not parent.options.trail:
        return
    if replacing:
        request.children[:] = [c for c in request.children
                               if not any(c is r for r in replacing)]
    request.children.append(result)


class AsyncResult(Generic[R]):
    """The result of a task that was sent, looked up by id in the app's result backend.

    Every property reads the backend again (nothing is cached), so ``state`` moves
    through PENDING, STARTED, a custom state a task set with ``update_state``, and a
    ready state. ``parent`` is None unless given: celeriac does not link a result to the
    result of the task that sent it (the message's ``parent_id`` header does).
    """

    def __init__(self, id: str, app: Celeriac | None = None, task_name: str | None = None, *,
                 parent: AsyncResult[Any] | None = None) -> None:
        """``AsyncResult(task_id)`` uses the current app, as Celery's does; ``app=`` another."""
        if app is None:
            from celeriac._state import get_current_app

            app = get_current_app()
        self.id = id
        self.app = app
        self.task_name = task_name
        #: The result before this one: a chain's previous step, a chord body's header.
        self.parent: AsyncResult[Any] | GroupResult[Any] | None = parent

    @property
    def task_id(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id} {self.status}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # as Celery: a result equals its task id
            return other == self.id
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def as_tuple(self) -> tuple[tuple[str, None], None]:
        """Celery's serialisable form ``((id, parent), None)``; children are stored so."""
        return (self.id, None), None

    def _record(self) -> ResultRecord | None:
        return self.app.backend.get(self.id)

    # -- state and value ----------------------------------------------------------------
    @property
    def status(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED, or a task's own state
        (``self.update_state(state="PROGRESS")``)."""
        record = self._record()
        return record.status if record else PENDING

    state = status

    def ready(self) -> bool:
        return self.status in READY_STATES

    def successful(self) -> bool:
        return self.status == SUCCESS

    def failed(self) -> bool:
        return self.status == FAILURE

    def exists(self) -> bool:
        """Is anything stored for this task (PENDING also means "never heard of")?"""
        return self._record() is not None

    @property
    def result(self) -> Any:
        """The return value, the exception of a failed (retried, revoked) task, the
        ``meta`` of a task's own state, or None while nothing is stored."""
        record = self._record()
        return None if record is None else _stored_value(record, states.EXCEPTION_STATES)

    info = result

    @property
    def traceback(self) -> str | None:
        record = self._record()
        return record.traceback if record else None

    @property
    def date_done(self) -> datetime | None:
        """When the task finished, as a timezone-aware UTC datetime (Celery's
        ``app.now()``, which is UTC here), or None while it is not ready."""
        record = self._record()
        if record is None or not record.ready or record.date_done is None:
            return None
        return datetime.fromtimestamp(record.date_done, timezone.utc)

    @property
    def name(self) -> str | None:
        """The task's name: stored with every result (Celery needs ``result_extended``)."""
        record = self._record()
        return (record.name if record else None) or self.task_name

    @property
    def retries(self) -> int | None:
        record = self._record()
        return record.retries if record else None

    @property
    def args(self) -> list[Any] | None:
        """The call's positional arguments, stored with ``result_extended=True``."""
        record = self._record()
        return record.args if record else None

    @property
    def kwargs(self) -> dict[str, Any] | None:
        """The call's keyword arguments, stored with ``result_extended=True``."""
        record = self._record()
        return record.kwargs if record else None

    @property
    def worker(self) -> str | None:
        """The host that ran the task, stored with ``result_extended=True``."""
        record = self._record()
        return record.worker if record else None

    @property
    def queue(self) -> str | None:
        """The queue the task came from, stored with ``result_extended=True``."""
        record = self._record()
        return record.queue if record else None

    # -- the graph of tasks sent by tasks -----------------------------------------------
    @property
    def children(self) -> list[AsyncResult[Any] | GroupResult[Any]] | None:
        """The results of the tasks this task sent while it ran (a group's as one
        :class:`GroupResult`): ``[]`` when it sent none, None while nothing is stored."""
        record = self._record()
        return None if record is None else _children(record, self.app)

    def iterdeps(self, intermediate: bool = False
                 ) -> Iterator[tuple[AsyncResult[Any] | None, AsyncResult[Any] | GroupResult[Any]]]:
        """``(parent, node)`` for this result and its children, breadth first.

        A node's children are known once it is ready; meeting one that is not raises
        :class:`IncompleteStream` unless ``intermediate`` (then its subtree is skipped).
        """
        stack: deque[tuple[AsyncResult[Any] | None, AsyncResult[Any] | GroupResult[Any]]] = \
            deque([(None, self)])
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if node.ready():
                if isinstance(node, AsyncResult):
                    stack.extend((node, child) for child in node.children or [])
                else:
                    stack.extend((None, child) for child in node.results)
            elif not intermediate:
                raise IncompleteStream(f"result {getattr(node, 'id', node)} is not ready")

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """``(result, value)`` for this task and every task it sent, as they finish
        (each one waited for with ``get(**kwargs)``), breadth first, as Celery's."""
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    def get_leaf(self) -> Any:
        """The value of the last result :meth:`iterdeps` reaches."""
        value = None
        for _, node in self.iterdeps():
            value = node.get()
        return value

    # -- waiting --------------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None, no_ack: bool = True, follow_parents: bool = True,
            callback: Callable[[str, Any], None] | None = None,
            on_message: Callable[[dict[str, Any]], None] | None = None,
            on_interval: Callable[[], None] | None = None, disable_sync_subtasks: bool = True,
            EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,
            PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES,
            ) -> R:
        """Wait for the task and return its value, re-raising its exception if it failed.

        Raises :class:`celeriac.exceptions.TimeoutError` when ``timeout`` seconds pass
        first, and :class:`SyncSubtaskError` (a ``RuntimeError``) inside a task a
        worker runs unless ``disable_sync_subtasks=False``. A custom state set with
        ``update_state`` does not end the wait: only SUCCESS, FAILURE and REVOKED do.

        As in Celery: ``propagate=False`` returns the exception instead of raising it;
        ``callback(task_id, value)`` is called with the value; ``on_message(meta)`` with
        each new state seen (a dict of ``task_id``, ``status``, ``result``,
        ``traceback``, ``children``, ``date_done``) and ``on_interval()`` at each poll,
        which then polls every ``interval`` seconds (default 0.1); ``EXCEPTION_STATES``
        and ``PROPAGATE_STATES`` say which states hold an exception and which raise it.
        Without those callbacks, ``interval`` is the poll period of a backend that polls
        (SQLite; default 5 ms) and unused by those that are told (memory, Redis).
        Accepted without effect (a DEBUG line says so): ``no_ack`` (AMQP) and
        ``follow_parents`` (no parent is linked).
        """
        _before_wait(disable_sync_subtasks, no_ack, follow_parents)
        if on_message is not None or on_interval is not None:
            record = self._poll(timeout, interval or 0.1, on_message, on_interval)
        elif interval is not None:
            record = self.app.backend.wait(self.id, timeout=timeout, interval=interval)
        else:
            record = self.app.backend.wait(self.id, timeout=timeout)
        return self._value(record, propagate, callback, EXCEPTION_STATES, PROPAGATE_STATES)

    wait = get  # Celery's deprecated alias

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float | None = None, disable_sync_subtasks: bool = True) -> R:
        """:meth:`get` for a coroutine: ``await result.aget(timeout=10)`` waits without
        blocking the event loop (a celeriac addition; Celery has no async API).

        Same outcome as ``get``: the value, the task's exception re-raised (returned with
        ``propagate=False``), :class:`celeriac.exceptions.TimeoutError` after ``timeout``
        seconds, :class:`SyncSubtaskError` inside a worker's task unless
        ``disable_sync_subtasks=False``. Every ``aget`` of one event loop shares one
        poller per result backend, which looks up all the ids awaited in one call on the
        loop's executor (:mod:`celeriac.aio.client`): it looks at once, then every 5 ms
        growing to 100 ms; ``interval`` caps that pause for this wait. Cancelling the
        awaiting task simply stops the wait.
        """
        _before_wait(disable_sync_subtasks, True, True)
        return self._value(await self._ready_record(timeout, interval), propagate)

    async def _ready_record(self, timeout: float | None, interval: float | None) -> ResultRecord:
        """The ready record, awaited on the loop's shared poller (:mod:`celeriac.aio.client`)."""
        from celeriac.aio.client import wait_for_record

        return await wait_for_record(self.app.backend, self.id, timeout=timeout, interval=interval)

    def _poll(self, timeout: float | None, interval: float,
              on_message: Callable[[dict[str, Any]], None] | None,
              on_interval: Callable[[], None] | None) -> ResultRecord:
        """Wait by reading the record every ``interval`` seconds, reporting each change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[str, str] | None = None
        while True:
            record = self._record()
            if record is not None and on_message is not None:
                key = (record.status, repr(record.result))
                if key != seen:
                    seen = key
                    on_message(_meta(record))
            if record is not None and record.ready:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"result of {self.id} not ready after {timeout}s")
            if on_interval is not None:
                on_interval()
            left = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(0.0, left))

    def _value(self, record: ResultRecord, propagate: bool,
               callback: Callable[[str, Any], None] | None = None,
               exception_states: frozenset[str] = states.EXCEPTION_STATES,
               propagate_states: frozenset[str] = states.PROPAGATE_STATES) -> R:
        value: R = _stored_value(record, exception_states)
        if propagate and record.status in propagate_states and isinstance(value, BaseException):
            raise value
        if callback is not None:
            callback(self.id, value)
        return value

    def maybe_throw(self, propagate: bool = True,
                    callback: Callable[[str, Any], None] | None = None) -> None:
        """Re-raise the task's exception if it is finished and failed (Celery's)."""
        record = self._record()
        if record is not None and record.ready:
            self._value(record, propagate, callback)

    maybe_reraise = maybe_throw

    def forget(self) -> None:
        """Delete the stored result."""
        self.app.backend.forget(self.id)

    def revoke(self, connection: Any = None, terminate: bool = False, signal: str | int | None = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Revoke the task: a worker that gets its message does not run it (REVOKED), and with
        ``terminate=True`` one running it stops it (see :mod:`celeriac.revoke`).

        ``connection`` is accepted for Celery's signature and unused. ``wait=True``
        waits up to ``timeout`` seconds for the task's state to be final (REVOKED, or
        whatever it reached first); Celery waits for worker replies instead, which
        celeriac's workers do not send (they read revocations from the broker).
        """
        from celeriac.revoke import revoke

        revoke(self.app, self.id, terminate=terminate, signal=signal)
        if wait:
            self._wait_ready(timeout)

    def _wait_ready(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            self.app.backend.wait(self.id, timeout=timeout)


def _stored_value(record: ResultRecord, exception_states: frozenset[str]) -> Any:
    """What ``result`` is for ``record``: the exception in an exception state (when one
    was recorded), else the stored value (a return value, or a custom state's meta)."""
    if record.status in exception_states and record.exc_type:
        return exception_from_record(record)
    if record.status == FAILURE:  # update_state(state=FAILURE, meta=...) without an exception
        return exception_from_record(record) if record.result is None else record.result
    return record.result


def _children(record: ResultRecord, app: Celeriac) -> list[AsyncResult[Any] | GroupResult[Any]]:
    return [result_from_tuple(child, app) for child in record.children or ()]


def _meta(record: ResultRecord) -> dict[str, Any]:
    """A record as Celery's task meta dict (what ``on_message`` receives)."""
    done = record.date_done if record.ready else None
    return {
        "task_id": record.task_id, "status": record.status,
        "result": _stored_value(record, states.EXCEPTION_STATES),
        "traceback": record.traceback, "children": record.children or [],
        "date_done": None if done is None else datetime.fromtimestamp(done, timezone.utc).isoformat(),
    }


class EagerResult(AsyncResult[R]):
    """The result of a task run locally (``apply()`` or ``task_always_eager``): ready at
    once, nothing to wait for; its children are the tasks the run sent."""

    def __init__(self, id: str, app: Celeriac, record: ResultRecord,
                 children: list[AsyncResult[Any] | GroupResult[Any]] | None = None) -> None:
        super().__init__(id, app, record.name)
        self._local = record
        self._children = children

    def _record(self) -> ResultRecord | None:
        return self._local

    @property
    def children(self) -> list[AsyncResult[Any] | GroupResult[Any]] | None:
        """The results the run's sends returned (eager ones are EagerResults, which
        nothing stored could give back)."""
        if self._children is not None:
            return list(self._children)
        return _children(self._local, self.app)

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None, no_ack: bool = True, follow_parents: bool = True,
            callback: Callable[[str, Any], None] | None = None,
            on_message: Callable[[dict[str, Any]], None] | None = None,
            on_interval: Callable[[], None] | None = None, disable_sync_subtasks: bool = True,
            EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,
            PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES,
            ) -> R:
        """The value (or the exception), at once; the arguments as :meth:`AsyncResult.get`'s
        (``timeout``, ``interval``, ``on_interval`` have nothing to wait for)."""
        _before_wait(disable_sync_subtasks, no_ack, follow_parents)
        if self._local.status in (IGNORED, REJECTED):
            return None  # type: ignore[return-value]  # Celery's: neither a value nor an error
        if on_message is not None:
            on_message(_meta(self._local))
        return self._value(self._local, propagate, callback, EXCEPTION_STATES, PROPAGATE_STATES)

    wait = get

    async def _ready_record(self, timeout: float | None, interval: float | None) -> ResultRecord:
        """Ready at once (``aget`` has nothing to wait for)."""
        return self._local

    def forget(self) -> None:
        """Nothing is stored for an eager result."""

__all__ = ["AsyncResult", "EagerResult", "GroupResult", "ResultSet", "exception_from_record"]
