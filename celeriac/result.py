"""Handles on task results: :class:`AsyncResult`, the local :class:`EagerResult`, and
:class:`GroupResult` for the tasks of a group."""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from celeriac.backends.base import ResultRecord
from celeriac.exceptions import REMOTE_SAFE_ERRORS, TaskError, TimeoutError
from celeriac.states import FAILURE, IGNORED, PENDING, READY_STATES, REJECTED, SUCCESS

if TYPE_CHECKING:
    from celeriac.app import Celeriac

R = TypeVar("R")


def exception_from_record(record: ResultRecord) -> BaseException:
    """Re-create a task's exception from what the worker stored.

    Only builtin exception types and celeriac's own errors are re-created: the
    type name comes from the result store, and importing whatever it names
    would let anyone who can write there run code here. Everything else is a
    :class:`TaskError` carrying the original type name, message and traceback.
    """
    name = record.exc_type or "Exception"
    message = record.exc_message or ""
    cls = REMOTE_SAFE_ERRORS.get(name) or getattr(builtins, name, None)
    exc: BaseException
    if isinstance(cls, type) and issubclass(cls, BaseException) and cls is not TaskError:
        try:
            exc = cls(message) if message else cls()
        except TypeError:  # builtins such as UnicodeDecodeError need more arguments
            exc = TaskError(name, message, record.traceback)
    else:
        exc = TaskError(name, message, record.traceback)
    if record.traceback and hasattr(exc, "add_note"):
        exc.add_note(f"Remote traceback:\n{record.traceback}")
    return exc


class AsyncResult(Generic[R]):
    """The result of a task that was sent, looked up by id in the app's result backend."""

    def __init__(self, id: str, app: Celeriac, task_name: str | None = None) -> None:
        self.id = id
        self.app = app
        self.task_name = task_name

    @property
    def task_id(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id} {self.status}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _record(self) -> ResultRecord | None:
        return self.app.backend.get(self.id)

    @property
    def status(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        record = self._record()
        return record.status if record else PENDING

    state = status

    def ready(self) -> bool:
        return self.status in READY_STATES

    def successful(self) -> bool:
        return self.status == SUCCESS

    def failed(self) -> bool:
        return self.status == FAILURE

    @property
    def result(self) -> Any:
        """The return value, the exception of a failed task, or None while not ready."""
        record = self._record()
        if record is None:
            return None
        if record.status == SUCCESS:
            return record.result
        if record.exc_type:
            return exception_from_record(record)
        return None

    info = result

    @property
    def traceback(self) -> str | None:
        record = self._record()
        return record.traceback if record else None

    def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        """Wait for the task and return its value, re-raising its exception if it failed.

        Raises :class:`celeriac.exceptions.TimeoutError` when ``timeout`` seconds pass first.
        """
        record = self.app.backend.wait(self.id, timeout=timeout)
        return self._value(record, propagate)

    def _value(self, record: ResultRecord, propagate: bool) -> R:
        if record.status == SUCCESS:
            value: R = record.result
            return value
        exc = exception_from_record(record)
        if propagate:
            raise exc
        return exc  # type: ignore[return-value]

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


class EagerResult(AsyncResult[R]):
    """The result of a task run locally (``apply()`` or ``task_always_eager``)."""

    def __init__(self, id: str, app: Celeriac, record: ResultRecord) -> None:
        super().__init__(id, app, record.name)
        self._local = record

    def _record(self) -> ResultRecord | None:
        return self._local

    def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        if self._local.status in (IGNORED, REJECTED):
            return None  # type: ignore[return-value]  # Celery's: neither a value nor an error
        return self._value(self._local, propagate)

    def forget(self) -> None:
        """Nothing is stored for an eager result."""


class GroupResult(Generic[R]):
    """The results of a group's tasks, in the order the tasks were given.

    A list of :class:`AsyncResult` (index it, iterate it, take its ``len``) plus
    questions about all of them at once, with Celery's meanings. ``id`` is the group
    id that every message carried in its ``group`` header (``self.request.group`` in
    the task). Nothing about the group itself is stored: keep this object (or its
    task ids) to ask later.
    """

    def __init__(self, id: str, results: Iterable[AsyncResult[R]]) -> None:
        self.id = id
        self.results: list[AsyncResult[R]] = list(results)

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} ({len(self.results)} tasks)>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult[R]]:
        return iter(self.results)

    @overload
    def __getitem__(self, index: int) -> AsyncResult[R]: ...

    @overload
    def __getitem__(self, index: slice) -> list[AsyncResult[R]]: ...

    def __getitem__(self, index: int | slice) -> AsyncResult[R] | list[AsyncResult[R]]:
        return self.results[index]

    def ready(self) -> bool:
        """Have all the tasks finished (succeeded, failed or were revoked)?"""
        return all(result.ready() for result in self.results)

    def waiting(self) -> bool:
        """Is any task not finished yet?"""
        return not self.ready()

    def successful(self) -> bool:
        """Did every task succeed?"""
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        """Did any task fail?"""
        return any(result.failed() for result in self.results)

    def completed_count(self) -> int:
        """How many tasks succeeded (as in Celery, "completed" means successful)."""
        return sum(result.successful() for result in self.results)

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[R]:
        """The values of all the tasks, in order; same as :meth:`join`."""
        return self.join(timeout, propagate)

    def join(self, timeout: float | None = None, propagate: bool = True) -> list[R]:
        """Wait for the tasks one after the other and return their values in order.

        ``timeout`` is for the whole group, not per task: the call returns or raises
        :class:`celeriac.exceptions.TimeoutError` within about ``timeout`` seconds. With
        ``propagate`` the first failed task *in order* re-raises its exception (as
        :meth:`AsyncResult.get` does); without it, exceptions take their task's place.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[R] = []
        for index, result in enumerate(self.results):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                values.append(result.get(timeout=remaining, propagate=propagate))
            except TimeoutError:
                raise TimeoutError(f"group {self.id}: task {index} of {len(self.results)} "
                                   f"({result.id}) not ready after {timeout}s") from None
        return values

    def forget(self) -> None:
        """Delete the stored results of all the tasks."""
        for result in self.results:
            result.forget()

    def revoke(self, connection: Any = None, terminate: bool = False, signal: str | int | None = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Revoke every task of the group in one broker call (see :meth:`AsyncResult.revoke`)."""
        if not self.results:
            return
        from celeriac.revoke import revoke

        revoke(self.results[0].app, [r.id for r in self.results], terminate=terminate,
               signal=signal)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for result in self.results:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                result._wait_ready(left)
