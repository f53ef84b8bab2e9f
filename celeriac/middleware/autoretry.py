"""Autoretry: ``@app.task(autoretry_for=(ConnectionError,), retry_backoff=True)``
retries a task that raised one of those exceptions, as if it had called
``self.retry(exc=exc)`` (the same limits, delays and backoff)."""

from __future__ import annotations

from celeriac.backends.base import ResultRecord
from celeriac.exceptions import ExceptionInfo, Retry
from celeriac.middleware.base import Middleware, TaskRun
from celeriac.states import RETRY


class Autoretry(Middleware):
    """Turns a failure the task listed in ``autoretry_for`` into a retry."""

    def task_error(self, run: TaskRun, exc: Exception) -> ResultRecord | None:
        task, request = run.task, run.request
        wanted = task.options.autoretry_for
        if not wanted or not isinstance(exc, wanted):
            return None
        from celeriac.worker.run import failure_record  # worker.run imports this package

        try:
            task.retry(exc=exc)
        except Retry as signal:
            cause = signal.exc or signal
            run.einfo = ExceptionInfo(cause)
            return failure_record(request.id, task.name, cause, request.retries, status=RETRY)
        except Exception as final:  # retries used up: the task fails with this
            run.einfo = ExceptionInfo(final)
            return failure_record(request.id, task.name, final, request.retries)
        return None
