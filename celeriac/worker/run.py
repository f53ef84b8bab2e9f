"""Running one task: the same code path for a worker and for ``Task.apply()``.

:func:`run_task` calls the task's function inside its request context and time
limits and turns whatever happens into a :class:`ResultRecord`: a value
(SUCCESS), a retry (RETRY: a new message was already sent), or an exception
(FAILURE). It never lets an ``Exception`` escape, so the worker always knows
what to store and ack; ``BaseException``s that are not errors (shutdown,
greenlet kills) do escape, on purpose, and the message is then not acked.
"""

from __future__ import annotations

import json
import time
import traceback
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from celeriac.backends.base import FAILURE, RETRY, SUCCESS, ResultRecord
from celeriac.context import Request, current_request
from celeriac.errors import HardTimeLimit, Retry, SerializationError, TaskError, TimeLimitExceeded

if TYPE_CHECKING:
    from celeriac.result import EagerResult
    from celeriac.task import Task

def failure_record(task_id: str, name: str | None, exc: BaseException, retries: int = 0,
                   tb: str | None = None, status: str = FAILURE) -> ResultRecord:
    """Describe ``exc`` as a result record (type name, message, traceback text)."""
    exc_type = exc.exc_type if isinstance(exc, TaskError) else type(exc).__name__
    message = exc.exc_message if isinstance(exc, TaskError) else str(exc)
    if tb is None and exc.__traceback__ is not None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ResultRecord(task_id=task_id, status=status, exc_type=exc_type, exc_message=message,
                        traceback=tb, name=name, retries=retries, date_done=time.time())


def _checked_value(value: Any) -> Any:
    """Results are stored as JSON: refuse what JSON cannot carry, with a clear error."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"task result cannot be encoded as JSON: {exc}") from None
    return value


def run_task(task: Task[Any, Any], request: Request,
             guard: AbstractContextManager[None] | None = None) -> ResultRecord:
    """Run ``task`` for ``request`` inside ``guard`` (its time limits) and describe the outcome."""
    reset = current_request.set(request)
    try:
        with guard or nullcontext():
            value = task(*request.args, **request.kwargs)
        return ResultRecord(task_id=request.id, status=SUCCESS, result=_checked_value(value),
                            name=task.name, retries=request.retries, date_done=time.time())
    except Retry as signal:
        return _retry_record(task, request, signal)
    except HardTimeLimit as exc:
        return failure_record(request.id, task.name, TimeLimitExceeded(str(exc)), request.retries)
    except Exception as exc:
        if task.options.autoretry_for and isinstance(exc, task.options.autoretry_for):
            try:
                task.retry(exc=exc)
            except Retry as signal:
                return _retry_record(task, request, signal)
            except Exception as final:
                return failure_record(request.id, task.name, final, request.retries)
        return failure_record(request.id, task.name, exc, request.retries)
    finally:
        current_request.reset(reset)


def _retry_record(task: Task[Any, Any], request: Request, signal: Retry) -> ResultRecord:
    cause = signal.exc or signal
    return failure_record(request.id, task.name, cause, request.retries, status=RETRY)


def run_eagerly(task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any],
                task_id: str) -> EagerResult[Any]:
    """Run a task here, retrying at once when it asks to, and wrap the final record."""
    from celeriac.result import EagerResult

    retries = 0
    while True:
        request = Request(id=task_id, task=task.name, args=args, kwargs=kwargs, retries=retries,
                          root_id=task_id, is_eager=True)
        record = run_task(task, request)
        if record.status != RETRY:
            return EagerResult(task_id, task.app, record)
        retries += 1
