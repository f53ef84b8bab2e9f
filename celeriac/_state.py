"""Process-wide app state, as Celery's ``celery._state``: which app is current, and the
shared tasks every app gets.

Celery code finds "the" app without being handed one: ``current_app``, and
``@shared_task`` in a reusable module (a Django app's ``tasks.py``) that must not import
the project's app. That needs a little global state, and this module is all of it:

- the *current app* of each thread (:func:`set_current_app`, ``app.set_current()``, and
  every app created with ``set_as_current=True``, the default), then the process's
  *default app* (``app.set_default()``; the worker sets its app as both), then the last
  app made current in any thread (created with ``set_as_current=True``, or
  ``app.set_current()``), and only when there is none of
  those an app created on demand, ``Celeriac("default")``. Celery stops at the default
  app; the extra step means a thread the project did not start (a thread pool, a green
  thread) finds the project's app rather than an unconfigured one that would send to
  ``./celeriac.db``;
- every app alive (a weak set: an app nobody holds is forgotten);
- the shared tasks: each is registered on every app that exists when it is declared and
  on every app created afterwards.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from celeriac.context import current_task_var
from celeriac.local import Proxy

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task
    from celeriac.task_options import TaskOptions


class _CurrentApp(threading.local):
    """The current app of one thread (of one greenlet, once a green pool patched)."""

    app: Celeriac | None = None


_tls = _CurrentApp()
_lock = threading.RLock()
_default_app: Celeriac | None = None
_last_current: Celeriac | None = None
_apps: weakref.WeakSet[Celeriac] = weakref.WeakSet()
#: Called with every app, existing and future (``connect_on_app_created``).
_on_app_created: list[Callable[[Celeriac], Any]] = []


def set_current_app(app: Celeriac | None) -> None:
    """Make ``app`` the current app of this thread (None: fall back to the default)."""
    global _last_current
    _tls.app = app
    if app is not None:
        _last_current = app


def set_default_app(app: Celeriac | None) -> None:
    """Make ``app`` the default app of the process: current where a thread set none."""
    global _default_app
    _default_app = app


def get_default_app() -> Celeriac | None:
    """The app set with ``app.set_default()``, if any (none is created here)."""
    return _default_app


def get_current_app() -> Celeriac:
    """This thread's current app, else the default app, else the last app made current,
    else a ``Celeriac("default")`` created now and made the default (as Celery does)."""
    app = _tls.app or _default_app or _last_current
    if app is not None:
        return app
    with _lock:
        if _default_app is None:
            from celeriac.app import Celeriac

            set_default_app(Celeriac("default", set_as_current=False))
        assert _default_app is not None
        return _default_app


@contextmanager
def using_app(app: Celeriac) -> Iterator[Celeriac]:
    """Make ``app`` the current app of this thread and the process default for the block,
    then restore what was there: an in-process test worker, ``depends_on_current_app``."""
    global _default_app, _last_current
    saved = (_tls.app, _default_app, _last_current)
    set_current_app(app)
    set_default_app(app)
    try:
        yield app
    finally:
        _tls.app, _default_app, _last_current = saved


#: The current app (:func:`get_current_app`) at every use: ``celeriac.current_app``.
current_app = cast("Celeriac", Proxy(get_current_app, "current_app"))


def get_current_task() -> Task[..., Any] | None:
    """The task running in this thread or greenlet (on a worker or in ``apply``), or None."""
    return current_task_var.get()


#: The running task (:func:`get_current_task`) at every use: ``celeriac.current_task``.
#: Outside a task it stands for None, so ``if current_task:`` is false there, as in Celery.
current_task = cast("Task[..., Any]", Proxy(get_current_task, "current_task"))


def register_app(app: Celeriac) -> None:
    """Record a new app and give it everything declared for every app (shared tasks).

    Called at the end of the app's constructor, so its ``task_cls`` is already set.
    """
    with _lock:
        _apps.add(app)
        callbacks = list(_on_app_created)
    for callback in callbacks:
        callback(app)


def connect_on_app_created(callback: Callable[[Celeriac], Any]) -> None:
    """Call ``callback(app)`` for every app alive now and every app created from now on."""
    with _lock:
        _on_app_created.append(callback)
        existing = list(_apps)
    for app in existing:
        callback(app)


class SharedTaskEntry:
    """One ``@shared_task`` function and its options, and its task on each app.

    Each app keeps its tasks of shared entries (``app.shared_tasks``) rather than the
    proxy looking them up by name, so that a task name decided by a ``base=`` class, or
    an app that replaced the task, cannot make the proxy find the wrong task. They are
    kept on the app, not here, so that an app nobody holds can still be collected.
    """

    def __init__(self, fn: Callable[..., Any], options: TaskOptions) -> None:
        self.fn = fn
        self.options = options
        self._lock = threading.Lock()

    def register(self, app: Celeriac) -> Task[Any, Any]:
        """The task on ``app``, registered there first if it is not yet.

        An app that already has another function under the task's name keeps it, and
        that is the task the proxy uses there, as in Celery: declaring a shared task must
        not break an unrelated app (a test app, another project's app) that happens to
        use the name.
        """
        with self._lock:
            task = app.shared_tasks.get(self)
            if task is None:
                task = app.shared_tasks[self] = app.add_task(self.fn, self.options,
                                                             keep_existing=True)
            return task

    def current(self) -> Task[Any, Any]:
        """The task on the current app: what calling the shared task uses."""
        return self.register(get_current_app())
