"""Handles on task results: :class:`AsyncResult` and the local :class:`EagerResult`."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac.backends.base import FAILURE, PENDING, READY_STATES, SUCCESS, ResultRecord
from celeriac.errors import REMOTE_SAFE_ERRORS, TaskError

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

        Raises :class:`celeriac.errors.TimeoutError` when ``timeout`` seconds pass first.
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


class EagerResult(AsyncResult[R]):
    """The result of a task run locally (``apply()`` or ``task_always_eager``)."""

    def __init__(self, id: str, app: Celeriac, record: ResultRecord) -> None:
        super().__init__(id, app, record.name)
        self._local = record

    def _record(self) -> ResultRecord | None:
        return self._local

    def get(self, timeout: float | None = None, propagate: bool = True) -> R:
        return self._value(self._local, propagate)

    def forget(self) -> None:
        """Nothing is stored for an eager result."""
