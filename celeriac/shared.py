"""``@shared_task``: a task declared without an app, for every app (Celery's ``shared_task``).

A reusable module (a Django app's ``tasks.py``, a library) cannot import the project's
app, so it declares its tasks with ``@shared_task``: each app of the process, existing or
created later, gets its own task for the function (registered with the app's
``task_cls``), and the name the decorator returns stands for the task of the *current* app
(:mod:`celeriac._state`) each time it is used. ``add.delay(2, 3)`` therefore sends with the
project's app once the project created it, whichever module declared ``add``.

It takes every option ``@app.task`` takes, and is typed the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, cast, overload

from celeriac import _state
from celeriac.exceptions import ConfigurationError
from celeriac.local import Proxy
from celeriac.task_options import TaskOptions

if TYPE_CHECKING:
    from celeriac.task import Task

P = ParamSpec("P")
R = TypeVar("R")


@overload
def shared_task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def shared_task(*, bind: Literal[True], **options: Any
                ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...


@overload
def shared_task(*, bind: Literal[False] = False, **options: Any
                ) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def shared_task(*fn: Callable[..., Any], **options: Any) -> Any:
    """Declare a task for every app: ``@shared_task`` or ``@shared_task(option=value, ...)``.

    The options are checked here, once, so a misspelt one fails at the decorator as with
    ``@app.task`` rather than when some app is created later.
    """
    if len(fn) > 1 or (fn and options) or (fn and not callable(fn[0])):
        raise ConfigurationError("use @shared_task or @shared_task(option=value, ...)")
    checked = TaskOptions.check(dict(options))

    def declare(func: Callable[..., Any]) -> Any:
        entry = _state.SharedTaskEntry(func, checked)
        _state.connect_on_app_created(entry.register)
        return _shared_proxy(entry)

    return declare(fn[0]) if fn else declare


def _shared_proxy(entry: _state.SharedTaskEntry) -> Any:
    """The current app's task for ``entry``, carrying the function's own name and docstring
    (for help(), documentation tools and pytest) without resolving an app for them."""
    proxy = Proxy(entry.current, f"shared task {entry.fn.__qualname__}")
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        object.__setattr__(proxy, attribute, getattr(entry.fn, attribute, None))
    object.__setattr__(proxy, "__wrapped__", entry.fn)
    return cast("Task[Any, Any]", proxy)
