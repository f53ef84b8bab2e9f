"""Django's database connections and caches closed around each task, as Celery's fixup does.

A worker process lives for hours; a connection opened by one task may be dead (the server
restarted, an idle timeout) or left in a failed transaction by the next. Celery's Django
fixup closes every connection this thread (or greenlet) opened before and after each task
that a worker runs, and the caches after it; so does this middleware, in the same places:
``before_task`` and ``after_task`` run in the thread or greenlet that runs the task, which
is where Django keeps its connections. Eager runs (``task.apply``) are left alone: they run
inside the caller's request or transaction.

Errors closing a connection that is already gone are ignored, as in Celery; any other
database error is logged by the pipeline and the task's outcome stands.
Only in the pipeline when the Django fixup applies to the app
(:func:`celeriac.contrib.django.fixup.applies`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.middleware.base import Middleware, TaskRun

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class DjangoConnections(Middleware):
    """Close this thread's (greenlet's) database connections before and after each task,
    and Django's caches after it."""

    def __init__(self) -> None:
        from django.core import cache
        from django.db import DatabaseError, InterfaceError, connections

        self._connections: Any = connections
        self._caches: Any = cache
        self._interface_error: type[Exception] = InterfaceError
        self._database_error: type[Exception] = DatabaseError

    def process_started(self, app: Celeriac) -> None:
        # Whatever django.setup() or the app opened while the process started (an
        # AppConfig.ready() that queries), as Celery's fixup closes at worker start.
        self.close_database()
        self._caches.close_caches()

    def before_task(self, run: TaskRun) -> None:
        self.close_database()

    def after_task(self, run: TaskRun) -> None:
        self.close_database()
        self._caches.close_caches()

    def close_database(self) -> None:
        """Close the connections this thread or greenlet opened (only those: asking for the
        others would open them)."""
        for connection in self._connections.all(initialized_only=True):
            try:
                connection.close()
            except self._interface_error:
                pass  # already unusable: nothing left to close
            except self._database_error as exc:
                text = str(exc)
                if "closed" not in text and "not connected" not in text:
                    raise
