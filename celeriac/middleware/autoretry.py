"""Autoretry: ``@app.task(autoretry_for=(ConnectionError,), retry_backoff=True)``
retries a task that raised one of those exceptions, as if it had called
``self.retry(exc=exc, **retry_kwargs)`` (the same limits and delays), with
``retry_backoff`` as its countdown: exponential backoff applies to automatic
retries only, as in Celery.
``dont_autoretry_for`` carves exceptions out of it, subclasses included, so
``autoretry_for=(Exception,), dont_autoretry_for=(ValueError,)`` reads as meant."""

from __future__ import annotations

from celeriac.backends.base import ResultRecord
from celeriac.exceptions import ExceptionInfo, Retry
from celeriac.middleware.base import Middleware, TaskRun
from celeriac.states import RETRY
from celeriac.task_options import backoff_countdown


class Autoretry(Middleware):
    """Turns a failure the task listed in ``autoretry_for`` into a retry."""

    def task_error(self, run: TaskRun, exc: Exception) -> ResultRecord | None:
        task, request = run.task, run.request
        options = task.options
        if not options.autoretry_for or not isinstance(exc, options.autoretry_for) or (
                options.dont_autoretry_for and isinstance(exc, options.dont_autoretry_for)):
            return None
        from celeriac.worker.run import failure_record  # worker.run imports this package

        kwargs = dict(options.retry_kwargs)
        if options.retry_backoff:  # wins over a countdown in retry_kwargs, as in Celery
            kwargs["countdown"] = backoff_countdown(options, request.retries)
        try:
            # With throw=False in retry_kwargs retry() returns the signal instead of raising it.
            signal = task.retry(exc=exc, **kwargs)
        except Retry as raised:
            signal = raised
        except Exception as final:  # retries used up: the task fails with this
            run.einfo = ExceptionInfo(final)
            return failure_record(request.id, task.name, final, request.retries)
        cause = signal.exc or signal
        run.einfo = ExceptionInfo(cause)
        return failure_record(request.id, task.name, cause, request.retries, status=RETRY)
