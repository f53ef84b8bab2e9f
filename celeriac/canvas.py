"""Signatures and groups: task calls described now and sent later, many at a time.

A :class:`Signature` is one call (task, arguments, send options) that has not
been sent: ``add.s(2, 3)``. A :class:`group` sends several signatures in *one*
broker call (all of them or none), every message carrying the group's id in its
``group`` header, and returns a :class:`celeriac.result.GroupResult`.

This is deliberately small: no chains, chords or callbacks. Those need the
worker to send follow-up work when a task finishes, and a half-working chain is
worse than none.
"""

from __future__ import annotations

import reprlib
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from celeriac.exceptions import ConfigurationError
from celeriac.result import AsyncResult, GroupResult, add_to_parent
from celeriac.task import check_send_options

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.app import Celeriac
    from celeriac.task import SendOptions, Task

R = TypeVar("R")

#: Short reprs of arguments: a signature's repr goes into error messages.
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60


class Signature(Generic[R]):
    """One task call, described but not sent: task, arguments and send options.

    Usually made by ``task.s(*args, **kwargs)`` (typed against the task's
    parameters) or ``task.signature(args, kwargs, **options)``; ``app.signature(name,
    ...)`` names a task this process need not import. Options are those of
    ``apply_async`` and are checked when given, so a misspelt one fails where it is
    written. Sending applies the task's own options under the signature's, exactly as
    ``apply_async`` does.
    """

    def __init__(self, task: Task[Any, R] | str, args: Sequence[Any] | None = None,
                 kwargs: Mapping[str, Any] | None = None, options: SendOptions | None = None,
                 *, app: Celeriac | None = None) -> None:
        if isinstance(task, str):
            if app is None:
                raise ConfigurationError(f"Signature({task!r}) needs app=..., or use app.signature()")
            self.app, self.name, self.task = app, task, None
        else:
            self.app, self.name, self.task = task.app, task.name, task
        if args is not None and not isinstance(args, tuple | list):
            raise TypeError(f"args of {self.name} must be a tuple or list, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs of {self.name} must be a mapping, got {type(kwargs).__name__}")
        self.args: tuple[Any, ...] = tuple(args or ())
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.options: SendOptions = {}
        if options:
            self.set(**options)

    def __repr__(self) -> str:
        params = [*map(_repr.repr, self.args), *(f"{k}={_repr.repr(v)}" for k, v in self.kwargs.items())]
        text = f"{self.name}({', '.join(params)})"
        if self.options:
            text += f".set({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"
        return text

    def set(self, **options: Unpack[SendOptions]) -> Signature[R]:
        """Add or replace send options in place and return this signature (as Celery does,
        so ``sig.set(queue="io")`` without re-assigning still takes effect)."""
        check_send_options(options, "Signature.set")
        self.options.update(options)
        return self

    def merged(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
               options: SendOptions | None = None) -> Signature[R]:
        """A new signature with more arguments and options, this one unchanged.

        As in Celery, extra positional arguments go *before* the signature's own
        (``add.s(2).delay(1)`` calls ``add(1, 2)``), and the new keyword arguments and
        options win over the signature's.
        """
        check_send_options(options or {})
        task: Task[Any, R] | str = self.name if self.task is None else self.task
        combined = Signature(task, (*(args or ()), *self.args), {**self.kwargs, **(kwargs or {})},
                             app=self.app)
        combined.options = {**self.options, **(options or {})}
        return combined

    def resolved_options(self) -> SendOptions:
        """The options its message goes out with: the signature's over the task's own,
        if the task is registered in this app (it may be known only by name).

        Called once per message as it is sent (``group``, ``send_many``), so it also checks
        the arguments against the task's function (``typing``), as ``apply_async`` does: a
        signature may be partial until then."""
        task = self.task if self.task is not None else self.app.tasks.get(self.name)
        if task is None:
            return self.options
        task.check_arguments(self.args, self.kwargs)
        return task.resolve_options(self.options)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """Send it, with extra arguments (see :meth:`merged`) and options over its own."""
        call = self.merged(args, kwargs, options)
        task = call.task if call.task is not None else call.app.tasks.get(call.name)
        if task is not None:  # goes through apply_async: task_always_eager applies
            result: AsyncResult[R] = task.apply_async(list(call.args), call.kwargs, **call.options)
            return result
        return call.app.send_task(call.name, call.args, call.kwargs, **call.options)

    def delay(self, /, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        """Send it; ``args``/``kwargs`` are extra arguments, as for :meth:`apply_async`."""
        return self.apply_async(args, kwargs)


class group(Generic[R]):  # lower case: Celery's name, and it is used like a function
    """Signatures sent together: one broker call, one group id, one :class:`GroupResult`.

    ``group(add.s(1, 1), add.s(2, 2))`` or ``group(add.s(i, i) for i in range(100))``.
    Every message is encoded before any is sent and the broker stores all of them or
    none, so a group never runs in part because one argument could not be encoded
    or the broker failed half-way. Tasks see the group id as ``self.request.group``.
    """

    @overload
    def __init__(self, tasks: Iterable[Signature[R]], /) -> None: ...

    @overload
    def __init__(self, *tasks: Signature[R]) -> None: ...

    def __init__(self, *tasks: Signature[R] | Iterable[Signature[R]]) -> None:
        items: Iterable[Any] = tasks
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            items = tasks[0]
        self.tasks: list[Signature[R]] = []
        for item in items:
            if not isinstance(item, Signature):
                raise TypeError(f"a group holds signatures (task.s(...)), not {type(item).__name__}")
            self.tasks.append(item)

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self.tasks[:3]))
        more = f", ... ({len(self.tasks)} tasks)" if len(self.tasks) > 3 else ""
        return f"group([{shown}{more}])"

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Signature[R]]:
        return iter(self.tasks)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Unpack[SendOptions]) -> GroupResult[R]:
        """Send every task in one broker call. ``args``, ``kwargs`` and ``options`` are added
        to each signature (see :meth:`Signature.merged`); ``task_id`` is refused, ids are
        generated per message. Under ``task_always_eager`` the tasks run here, in order."""
        check_send_options(options, "group.apply_async", shared=True)
        group_id = str(uuid.uuid4())
        calls = [signature.merged(args, kwargs, options) for signature in self.tasks]
        if not calls:
            return GroupResult(group_id, [])
        app = calls[0].app
        if app.conf["task_always_eager"]:
            members = [call.apply_async() for call in calls]
            result = GroupResult(group_id, members, app=app)
            add_to_parent(result, replacing=members)  # each ran as a child of its own
            return result
        result = GroupResult(group_id, app.send_many(calls, group_id=group_id, chunk_size=None),
                             app=app)
        add_to_parent(result)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult[R]:
        """Send every task; ``args``/``kwargs`` are added to each, as for :meth:`apply_async`."""
        return self.apply_async(args, kwargs)
