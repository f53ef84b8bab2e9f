"""From a delivery to an outcome: decode, look up, check, run.

The executor runs inside a pool job (a thread, the main thread or a greenlet).
It returns what should happen to the message -- ack it, or dead-letter it with a
reason -- and the result to store; the consumer settles messages in batches
(the pipeline's ``before_settle`` stores results, then the acks go out). Every
concern around a run (status reports, expiry, revocation, signals, handlers,
``track_started``, autoretry, task events) is a hook of the pipeline
(:mod:`celeriac.middleware`); this module only does what every run needs. A
message that cannot be processed (malformed, unknown task) is dead-lettered
with the reason and, where a task id is known, a FAILURE result is stored so
that ``get()`` does not wait forever.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac import serialization
from celeriac.backends.base import ResultRecord
from celeriac.brokers.base import Delivery
from celeriac.context import Request, custom_headers
from celeriac.exceptions import MessageDecodeError, NotRegistered
from celeriac.message import TaskMessage, decode, peek_task_id
from celeriac.middleware.base import ACK, DEAD, SETTLED, Outcome, Pipeline, Rejection, TaskRun
from celeriac.pools.base import JobInfo, Pool
from celeriac.states import FAILURE, REVOKED, SUCCESS
from celeriac.worker.run import failure_record, run_task

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

log = logging.getLogger("celeriac.worker")


def _serializer_name(content_type: str) -> str:
    """The serializer a message came with (``request.serializer``: ``Task.retry``
    sends the new message with it)."""
    chosen = serialization.by_content_type(content_type)
    return chosen.name if chosen is not None else "json"


class Executor:
    """Processes one delivery at a time per job; shared by every job of a process."""

    def __init__(self, app: Celeriac, pool: Pool, pipeline: Pipeline,
                 early_ack: Callable[[Delivery], None]) -> None:
        self.app = app
        self.pool = pool
        self.pipeline = pipeline
        self.early_ack = early_ack
        self.accept = serialization.content_types(app.conf.accept_content)
        self.hostname = socket.gethostname()

    def handle(self, delivery: Delivery) -> Outcome:
        try:
            message = decode(delivery.body, self.accept)
        except MessageDecodeError as exc:
            name, task_id = peek_task_id(delivery.body)
            log.error("dead-lettered malformed message %s from queue %r: %s",
                      task_id or delivery.id, delivery.queue, exc)
            self.pipeline.message_rejected(Rejection(delivery, str(exc), exc, name, task_id))
            record = failure_record(task_id, name, exc) if task_id else None
            return Outcome(DEAD, f"malformed message: {exc}", record=record)
        try:
            task = self.app.get_task(message.task)
        except NotRegistered as exc:
            log.error("dead-lettered task %s[%s] from queue %r: %s", message.task, message.id,
                      delivery.queue, exc)
            self.pipeline.message_rejected(Rejection(delivery, str(exc), exc, message.task,
                                                     message.id, kind="unknown"))
            record = None if message.ignore_result else failure_record(
                message.id, message.task, exc, message.retries)
            return Outcome(DEAD, f"unknown task {message.task!r}", record=record)
        run = self._prepare(delivery, message, task)
        self.pipeline.message_received(run)
        skipped = self.pipeline.check_run(run)
        if skipped is not None:
            run.record = skipped
            self.pipeline.task_skipped(run)
            return Outcome(ACK, record=kept(run, skipped))
        return self._run(run)

    def _prepare(self, delivery: Delivery, message: TaskMessage, task: Task[Any, Any]) -> TaskRun:
        """The run's request and limits: the message's own values, else the task's."""
        request = Request(
            id=message.id, task=task.name, args=message.args, kwargs=message.kwargs,
            retries=message.retries, root_id=message.root_id, parent_id=message.parent_id,
            group=message.group, eta=message.eta, expires=message.expires,
            delivery_info={"routing_key": delivery.queue, "priority": delivery.priority},
            hostname=self.hostname, queue=delivery.queue, delivery_count=delivery.delivery_count,
            priority=message.priority, timelimit=message.timelimit,
            ignore_result=message.ignore_result,
            serializer=_serializer_name(message.content_type),
            origin=message.headers.get("origin"), headers=custom_headers(message.headers))
        return TaskRun(task, request, delivery, message,
                       time_limit=message.timelimit[0] or task.time_limit,
                       soft_time_limit=message.timelimit[1] or task.soft_time_limit,
                       ignore_result=message.ignore_result or task.ignore_result)

    def _run(self, run: TaskRun) -> Outcome:
        task, delivery = run.task, run.delivery
        assert delivery is not None
        acks_late = task.acks_late
        if not acks_late:
            self.early_ack(delivery)
        guard = self.pool.limits(run.soft_time_limit, run.time_limit,
                                 JobInfo(delivery.id, task.name, run.request.id))
        record = run_task(run, self.pipeline, guard)
        if record.status == SUCCESS:
            log.info("task %s[%s] succeeded in %.3fs", task.name, run.request.id, run.runtime)
        elif record.status == FAILURE:
            _log_failure(run, record)
        else:
            outcome = "was revoked" if record.status == REVOKED else "will be retried"
            log.warning("task %s[%s] %s after %.3fs: %s: %s", task.name, run.request.id, outcome,
                        run.runtime, record.exc_type, record.exc_message)
        if not acks_late:
            return Outcome(SETTLED, ran=True, record=kept(run, record))
        if record.status == FAILURE and not task.acks_on_failure_or_timeout:
            # Celery rejects the message without requeue (to a dead-letter exchange, if
            # the queue has one): celeriac's equivalent is its dead-letter store.
            return Outcome(DEAD, f"task failed with {record.exc_type} and "
                                 "acks_on_failure_or_timeout is False", ran=True,
                           record=kept(run, record))
        return Outcome(ACK, ran=True, record=kept(run, record))


def kept(run: TaskRun, record: ResultRecord) -> ResultRecord | None:
    """The record to store for ``run``: none when it ignores results, except what is
    not a success when its task stores errors even if ignored (Celery's rule)."""
    if not run.ignore_result:
        return record
    return record if record.status != SUCCESS and run.task.store_errors_even_if_ignored else None


def _log_failure(run: TaskRun, record: ResultRecord) -> None:
    """A failure the task expects (``throws``) is part of its normal life: one INFO line,
    as Celery logs it; any other is an ERROR with its traceback, to be looked at."""
    task, einfo = run.task, run.einfo
    if einfo is not None and task.options.throws and isinstance(einfo.exception, task.options.throws):
        log.info("task %s[%s] raised expected %s: %s", task.name, run.request.id,
                 record.exc_type, record.exc_message)
        return
    trace = f"\n{einfo.traceback.rstrip()}" if einfo is not None and einfo.traceback else ""
    log.error("task %s[%s] failed after %.3fs: %s: %s%s", task.name, run.request.id, run.runtime,
              record.exc_type, record.exc_message, trace)
