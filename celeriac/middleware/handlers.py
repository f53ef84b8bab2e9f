"""Task class handlers: ``before_start``, ``on_success``, ``on_failure``, ``on_retry``
and ``after_return`` of a :class:`~celeriac.task.Task` subclass (``base=``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celeriac.middleware.base import Middleware, TaskRun
from celeriac.states import FAILURE, IGNORED, REJECTED, RETRY, SUCCESS

log = logging.getLogger("celeriac.worker")


def _call(run: TaskRun, handler: str, fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("%s.%s of task %s[%s] raised; the task's outcome stands",
                      type(run.task).__name__, handler, run.task.name, run.request.id)


class TaskHandlers(Middleware):
    """Calls the handler methods a task's class overrides (none: nothing is called)."""

    def before_task(self, run: TaskRun) -> None:
        task, request = run.task, run.request
        if task.has_handlers:
            _call(run, "before_start", task.before_start, request.id, request.args,
                  request.kwargs)

    def after_task(self, run: TaskRun) -> None:
        task, request, record, einfo = run.task, run.request, run.record, run.einfo
        if not task.has_handlers or record is None or record.status in (IGNORED, REJECTED):
            return  # Ignore and Reject run no handler, not even after_return, as in Celery
        args = (request.id, request.args, request.kwargs)
        if record.status == SUCCESS:
            _call(run, "on_success", task.on_success, run.retval, *args)
        elif record.status == FAILURE and einfo is not None:
            _call(run, "on_failure", task.on_failure, einfo.exception, *args, einfo)
        elif record.status == RETRY and einfo is not None:
            _call(run, "on_retry", task.on_retry, einfo.exception, *args, einfo)
        retval = run.retval if record.status == SUCCESS else (einfo.exception if einfo else None)
        _call(run, "after_return", task.after_return, record.status, retval, *args, einfo)
