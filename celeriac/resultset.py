"""Many results as one: :class:`ResultSet`, and :class:`GroupResult` (a set with the
id of the group that sent it). Both are importable from :mod:`celeriac.result`, where
Celery has them.

A set is a list of :class:`AsyncResult` held by the caller, and every question about it
asks its members. A :class:`GroupResult` can also be stored in the result backend
(``save()``: its id and its members' ids, kept ``result_expires`` seconds like a
result) and rebuilt anywhere from its id alone (``GroupResult.restore(id)``), as in
Celery.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from celeriac.exceptions import TimeoutError

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import ResultBackend
    from celeriac.result import AsyncResult

R = TypeVar("R")


class ResultSet(Generic[R]):
    """A list of :class:`AsyncResult` with questions about all of them at once, with
    Celery's meanings: index it, iterate it, take its ``len``; ``ready``,
    ``successful``, ``failed``, ``waiting``, ``completed_count``; ``get``/``join``
    for every value in order; ``add``, ``remove``, ``discard``, ``update``, ``clear``."""

    def __init__(self, results: Iterable[AsyncResult[R]], app: Celeriac | None = None,
                 **kwargs: Any) -> None:
        if kwargs:  # ready_barrier and such: promise machinery celeriac has not
            raise TypeError(f"ResultSet() got unexpected keyword arguments {sorted(kwargs)}")
        self.results: list[AsyncResult[R]] = list(results)
        self._app = app

    @property
    def app(self) -> Celeriac:
        """The app of the first result (or the one given): where revocations go."""
        if self._app is None:
            if not self.results:
                from celeriac._state import get_current_app

                return get_current_app()
            self._app = self.results[0].app
        return self._app

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult[R]]:
        return iter(self.results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as Celery's

    @overload
    def __getitem__(self, index: int) -> AsyncResult[R]: ...

    @overload
    def __getitem__(self, index: slice) -> list[AsyncResult[R]]: ...

    def __getitem__(self, index: int | slice) -> AsyncResult[R] | list[AsyncResult[R]]:
        return self.results[index]

    # -- membership ---------------------------------------------------------------------
    def add(self, result: AsyncResult[R]) -> None:
        """Add ``result``; nothing happens if it is a member already."""
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: AsyncResult[R] | str) -> None:
        """Remove ``result`` (or the result of that task id); KeyError if not a member."""
        if isinstance(result, str):
            result = self.app.AsyncResult(result)
        try:
            self.results.remove(result)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: AsyncResult[R] | str) -> None:
        """Remove ``result`` if it is a member."""
        with contextlib.suppress(KeyError):
            self.remove(result)

    def update(self, results: Iterable[AsyncResult[R]]) -> None:
        """Add every result of ``results`` that is not a member yet."""
        self.results.extend(r for r in results if r not in self.results)

    def clear(self) -> None:
        """Remove every result (the list object stays the same)."""
        self.results[:] = []

    # -- questions ------------------------------------------------------------------------
    def ready(self) -> bool:
        """Have all the tasks finished (succeeded, failed or were revoked)?"""
        return all(result.ready() for result in self.results)

    def waiting(self) -> bool:
        """Is any task not finished yet?"""
        return any(not result.ready() for result in self.results)

    def successful(self) -> bool:
        """Did every task succeed?"""
        return all(result.successful() for result in self.results)

    def failed(self) -> bool:
        """Did any task fail?"""
        return any(result.failed() for result in self.results)

    def completed_count(self) -> int:
        """How many tasks succeeded (as in Celery, "completed" means successful)."""
        return sum(result.successful() for result in self.results)

    def maybe_throw(self, callback: Callable[[str, Any], None] | None = None,
                    propagate: bool = True) -> None:
        """Re-raise the exception of the first finished member that failed."""
        for result in self.results:
            result.maybe_throw(callback=callback, propagate=propagate)

    maybe_reraise = maybe_throw

    # -- waiting --------------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None, callback: Callable[[str, Any], None] | None = None,
            no_ack: bool = True, on_message: Callable[[dict[str, Any]], None] | None = None,
            disable_sync_subtasks: bool = True,
            on_interval: Callable[[], None] | None = None) -> list[R]:
        """The values of all the tasks, in order; same as :meth:`join`."""
        return self.join(timeout, propagate, interval, callback, no_ack, on_message,
                         disable_sync_subtasks, on_interval)

    def join(self, timeout: float | None = None, propagate: bool = True,
             interval: float | None = None, callback: Callable[[str, Any], None] | None = None,
             no_ack: bool = True, on_message: Callable[[dict[str, Any]], None] | None = None,
             disable_sync_subtasks: bool = True,
             on_interval: Callable[[], None] | None = None) -> list[R]:
        """Wait for the tasks one after the other and return their values in order.

        ``timeout`` is for the whole set, not per task: the call returns or raises
        :class:`celeriac.exceptions.TimeoutError` within about ``timeout`` seconds. With
        ``propagate`` the first failed task *in order* re-raises its exception (as
        :meth:`AsyncResult.get` does); without it, exceptions take their task's place.
        ``callback(task_id, value)``, when given, gets each value instead of the list
        (which is then empty), as in Celery. The other arguments are
        :meth:`AsyncResult.get`'s, passed to each member's.
        """
        from celeriac.result import check_can_block

        if disable_sync_subtasks:
            check_can_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[R] = []
        for index, result in enumerate(self.results):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                value = result.get(timeout=remaining, propagate=propagate, interval=interval,
                                   no_ack=no_ack, on_message=on_message, on_interval=on_interval,
                                   disable_sync_subtasks=False)
            except TimeoutError:
                raise TimeoutError(f"{self._describe()}: task {index} of {len(self.results)} "
                                   f"({result.id}) not ready after {timeout}s") from None
            if callback is not None:
                callback(result.id, value)
            else:
                values.append(value)
        return values

    async def aget(self, timeout: float | None = None, propagate: bool = True,
                   interval: float | None = None, disable_sync_subtasks: bool = True) -> list[R]:
        """:meth:`join` for a coroutine, without blocking the event loop (as
        :meth:`AsyncResult.aget`): the same values, order, ``timeout`` for the whole set
        and first failure *in order* re-raised. Every member is waited for at once, so
        the shared poller looks them all up in each of its calls."""
        from celeriac.result import check_can_block

        if disable_sync_subtasks:
            check_can_block()
        waits = [asyncio.ensure_future(r._ready_record(timeout, interval)) for r in self.results]
        try:
            values: list[R] = []
            for index, (result, wait) in enumerate(zip(self.results, waits, strict=True)):
                try:
                    record = await wait
                except TimeoutError:
                    raise TimeoutError(f"{self._describe()}: task {index} of {len(self.results)} "
                                       f"({result.id}) not ready after {timeout}s") from None
                values.append(result._value(record, propagate))
            return values
        finally:  # a failure or timeout ends the wait for the members after it too
            for wait in waits:
                if not wait.done():
                    wait.cancel()
                elif not wait.cancelled():
                    wait.exception()  # seen: no "exception was never retrieved" at exit

    def _describe(self) -> str:
        return "result set"

    def forget(self) -> None:
        """Delete the stored results of all the tasks."""
        for result in self.results:
            result.forget()

    def revoke(self, connection: Any = None, terminate: bool = False, signal: str | int | None = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Revoke every task of the set in one broker call (see :meth:`AsyncResult.revoke`)."""
        if not self.results:
            return
        from celeriac.revoke import revoke

        revoke(self.app, [r.id for r in self.results], terminate=terminate, signal=signal)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for result in self.results:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                result._wait_ready(left)


class GroupResult(ResultSet[R]):
    """The results of a group's tasks, in the order the tasks were given.

    ``id`` is the group id that every message carried in its ``group`` header
    (``self.request.group`` in the task). ``parent`` is accepted for Celery's
    signature; celeriac links no parents (it stays as given, usually None).
    """

    def __init__(self, id: str | None = None, results: Iterable[AsyncResult[R]] | None = None,
                 parent: Any = None, app: Celeriac | None = None) -> None:
        super().__init__(results or (), app)
        self.id = id
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} ({len(self.results)} tasks)>"

    def __str__(self) -> str:
        return str(self.id)

    def __bool__(self) -> bool:
        return bool(self.id or self.results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def _describe(self) -> str:
        return f"group {self.id}"

    @property
    def children(self) -> list[AsyncResult[R]]:
        """The group's results (Celery's spelling)."""
        return self.results

    def as_tuple(self) -> tuple[tuple[str | None, None], list[Any]]:
        """Celery's serialisable form: ``((id, parent), [member tuples])``."""
        return (self.id, None), [r.as_tuple() for r in self.results]

    # -- stored in the backend ---------------------------------------------------------------
    def save(self, backend: ResultBackend | None = None) -> GroupResult[R]:
        """Store the group's member ids under its id, for :meth:`restore` (in another
        process, later); kept ``result_expires`` seconds. Returns the group, as Celery's."""
        if not self.id:
            raise ValueError("cannot save a GroupResult without an id")
        (backend or self.app.backend).save_group(self.id, self.as_tuple()[1])
        return self

    def delete(self, backend: ResultBackend | None = None) -> None:
        """Delete what :meth:`save` stored (the members' own results stay)."""
        if self.id:
            (backend or self.app.backend).delete_group(self.id)

    @classmethod
    def restore(cls, id: str, backend: ResultBackend | None = None,
                app: Celeriac | None = None) -> GroupResult[Any] | None:
        """The group saved under ``id``, or None if it was never saved, was deleted or
        expired (as Celery's). ``app`` defaults to the current app."""
        from celeriac.result import result_from_tuple

        if app is None:
            from celeriac._state import get_current_app

            app = get_current_app()
        members = (backend or app.backend).restore_group(id)
        if members is None:
            return None
        restored = result_from_tuple([[id, None], members], app)
        assert isinstance(restored, GroupResult)
        return restored
