"""Running one task: the same code path for a worker and for ``Task.apply()``.

:func:`run_task` calls the task's function inside its request context and time
limits (a *runner*: the worker's is its pool's ``run_body``, which also awaits an
``async def`` task's coroutine on the process's event loop), with the hook
pipeline around it (``before_task`` in order, then the body, then ``after_task``
in reverse), and turns whatever happens into a :class:`ResultRecord`: a value
(SUCCESS), a retry (RETRY: a new message was already sent), a termination
(REVOKED), an ``Ignore`` (IGNORED) or a ``Reject`` (REJECTED; neither is stored
as such, the executor settles them) or an exception (FAILURE; a ``task_error``
hook such as autoretry may turn it, or a ``Reject``, into a RETRY). It never lets
an ``Exception`` escape, so the worker always knows what to store and ack;
``BaseException``s that are not errors (shutdown, greenlet kills) do escape, on
purpose, and the message is then not acked.
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from celeriac import fastjson, serialization
from celeriac.backends.base import ResultRecord
from celeriac.context import Request, current_request, current_task_var
from celeriac.exceptions import (
    ExceptionInfo,
    HardTimeLimit,
    Ignore,
    Reject,
    Retry,
    SerializationError,
    TaskError,
    TaskRevokedError,
    Terminated,
    TimeLimitExceeded,
)
from celeriac.middleware.base import Pipeline, TaskRun
from celeriac.states import FAILURE, IGNORED, REJECTED, RETRY, REVOKED, SUCCESS

if TYPE_CHECKING:
    from celeriac.result import EagerResult
    from celeriac.task import Links, Task


def failure_record(task_id: str, name: str | None, exc: BaseException, retries: int = 0,
                   tb: str | None = None, status: str = FAILURE) -> ResultRecord:
    """Describe ``exc`` as a result record (type name, message, traceback text)."""
    exc_type = exc.exc_type if isinstance(exc, TaskError) else type(exc).__name__
    message = exc.exc_message if isinstance(exc, TaskError) else str(exc)
    if tb is None and exc.__traceback__ is not None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    # A TaskError already stands for a remote exception: its own class says nothing.
    module = None if type(exc) is TaskError else type(exc).__module__
    return ResultRecord(task_id=task_id, status=status, exc_type=exc_type, exc_message=message,
                        traceback=tb, name=name, retries=retries, date_done=time.time(),
                        exc_module=module, exc_args=_json_args(exc))


def _json_args(exc: BaseException) -> list[Any] | None:
    """The exception's ``args`` if JSON can carry them (the client then calls its class
    with them), else None (it falls back to the message)."""
    try:
        serialization.json_dumps(exc.args)
    except (TypeError, ValueError):
        return None
    return list(exc.args)


def revoked_record(task_id: str, name: str | None, why: str, retries: int = 0) -> ResultRecord:
    """The REVOKED record of a task that was revoked, terminated or expired (``why``)."""
    return ResultRecord(task_id=task_id, status=REVOKED, name=name, exc_type="TaskRevokedError",
                        exc_message=why, retries=retries, date_done=time.time())


#: Return values JSON always carries (a float may be NaN, which the encoder refuses).
_PLAIN = frozenset({type(None), bool, int, str})


def _checked_value(value: Any) -> Any:
    """Results are stored as JSON (with kombu's markers for datetime, date, time, Decimal,
    UUID and bytes): refuse what it cannot carry here, where the task fails with a clear
    error, rather than when the record is stored."""
    if type(value) in _PLAIN:  # most tasks return one: nothing to encode to know
        return value
    if fastjson.plain_ascii(value) is not None:  # plain JSON values: orjson's word is enough
        return value
    try:
        serialization.json_dumps(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"task result cannot be encoded as JSON: {exc}") from None
    return value


def describe_request(record: ResultRecord, request: Request, extended: bool) -> None:
    """Add what the request knows to its task's record: the results of the tasks it sent
    (``children``), its lineage (``parent_id``, ``group_id``) and delivery count when it
    has them (a few bytes, for the dashboard's task page), and with ``result_extended``
    its arguments, worker and queue."""
    if request.children:
        record.children = [child.as_tuple() for child in request.children]
    if request.parent_id is not None:
        record.parent_id = request.parent_id
    if request.group is not None:
        record.group_id = request.group
    if request.delivery_count > 1:
        record.deliveries = request.delivery_count
    if extended:
        record.args, record.kwargs = list(request.args), dict(request.kwargs)
        record.worker, record.queue = request.hostname, request.queue


#: Runs a task's body (a call of its function, no arguments) and returns its value.
Runner = Callable[[Callable[[], Any]], Any]


def run_here(task: Task[Any, Any]) -> Runner:
    """The runner of an eager run: no time limits (as in Celery); an ``async def`` task's
    coroutine is awaited on this process's event loop thread while the caller waits --
    also when the caller runs an event loop itself (whose thread then waits too)."""
    if not task.is_async:
        return _call
    from celeriac.aio.await_ import run_coroutine
    from celeriac.aio.events import threadsafe_event

    def await_here(body: Callable[[], Any]) -> Any:
        return run_coroutine(body(), event=threadsafe_event(), name=task.name)

    return await_here


def _call(body: Callable[[], Any]) -> Any:
    return body()


def run_task(run: TaskRun, pipeline: Pipeline, runner: Runner | None = None) -> ResultRecord:
    """Run ``run.task`` for ``run.request`` with ``runner`` (its time limits; default
    :func:`run_here`), with the pipeline's hooks around it; ``run.record`` and the return
    value say how it ended."""
    reset = current_request.set(run.request)
    reset_task = current_task_var.set(run.task)
    try:
        pipeline.before_task(run)
        run.started_at = time.time()
        started = time.monotonic()
        run.record = _body(run, pipeline, runner or run_here(run.task))
        run.runtime = time.monotonic() - started
        describe_request(run.record, run.request, run.task.app.conf["result_extended"])
        pipeline.after_task(run)
        return run.record
    finally:
        current_task_var.reset(reset_task)
        current_request.reset(reset)


def _body(run: TaskRun, pipeline: Pipeline, runner: Runner) -> ResultRecord:
    task, request = run.task, run.request
    try:
        value = runner(partial(task, *request.args, **request.kwargs))
        run.retval = _checked_value(value)
        return ResultRecord(task_id=request.id, status=SUCCESS, result=run.retval,
                            name=task.name, retries=request.retries, date_done=time.time())
    except Retry as signal:
        cause = signal.exc or signal
        run.einfo = ExceptionInfo(cause)
        return failure_record(request.id, task.name, cause, request.retries, status=RETRY)
    except HardTimeLimit as exc:
        error = TimeLimitExceeded(str(exc))
        run.einfo = ExceptionInfo(error, traceback="")
        return failure_record(request.id, task.name, error, request.retries)
    except Terminated as exc:
        run.revoked = "terminated"
        run.einfo = ExceptionInfo(TaskRevokedError(str(exc) or "terminated"), traceback="")
        return revoked_record(request.id, task.name, "terminated", request.retries)
    except Ignore as exc:
        run.einfo = ExceptionInfo(exc)
        return failure_record(request.id, task.name, exc, request.retries, status=IGNORED)
    except Reject as exc:
        run.einfo = ExceptionInfo(exc)
        # A Reject is an Exception: autoretry_for=(Exception,) retries it, as in Celery.
        replaced = pipeline.task_error(run, exc)
        if replaced is not None:
            return replaced
        run.requeue = exc.requeue and _can_requeue(run)
        return failure_record(request.id, task.name, exc, request.retries,
                              tb=run.einfo.traceback, status=REJECTED)
    except Exception as exc:
        run.einfo = ExceptionInfo(exc)
        replaced = pipeline.task_error(run, exc)
        if replaced is not None:
            return replaced
        return failure_record(request.id, task.name, exc, request.retries,
                              tb=run.einfo.traceback)


def _can_requeue(run: TaskRun) -> bool:
    """Whether a rejected run's message can go back to its queue: a worker's message not
    acked yet (``acks_late``), short of its last delivery (the broker would dead-letter it
    at the next fetch anyway; the executor does now, saying why)."""
    delivery = run.delivery
    return (delivery is not None and run.task.acks_late
            and delivery.delivery_count < run.task.app.broker.max_deliveries)


def run_eagerly(task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], task_id: str, *,
                retries: int = 0, throw: bool = False, store: bool = False,
                store_errors: bool = False, priority: int | None = None,
                link: Links = None, link_error: Links = None,
                headers: dict[str, Any] | None = None) -> EagerResult[Any]:
    """Run a task here, retrying at once when it asks to, and wrap the final record.

    ``throw``: a task that failed re-raises its own exception (the object the body
    raised, traceback and all) once its hooks ran -- ``task_eager_propagates``.
    A retry is not a failure: it runs again here until the task returns or fails.
    ``store``: every record (retries too) goes to the result backend as a worker
    would store it -- ``task_store_eager_result``. ``store_errors``: only the records
    that are not a success (``store_errors_even_if_ignored`` on a task ignoring results).
    """
    from celeriac.middleware import eager_pipeline
    from celeriac.result import EagerResult

    pipeline = eager_pipeline()
    callbacks = errbacks = None
    if link or link_error:
        from celeriac.canvas.signatures import wire_links

        callbacks, errbacks = wire_links(link), wire_links(link_error)
    while True:
        request = Request(id=task_id, task=task.name, args=args, kwargs=kwargs, retries=retries,
                          root_id=task_id, is_eager=True, called_directly=False,
                          hostname=socket.gethostname(), priority=priority,
                          delivery_info={"is_eager": True, "exchange": None,
                                         "routing_key": None, "priority": priority},
                          callbacks=callbacks, errbacks=errbacks, headers=headers)
        run = TaskRun(task, request)
        record = run_task(run, pipeline)
        if record.status in (IGNORED, REJECTED):
            break
        if store or (store_errors and record.status != SUCCESS):
            task.app.backend.store(record)
        if record.status != RETRY:
            break
        retries += 1
    if throw and record.status == FAILURE and run.einfo is not None:
        raise run.einfo.exception
    return EagerResult(task_id, task.app, record, children=run.request.children)
