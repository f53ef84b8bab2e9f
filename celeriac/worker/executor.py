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

from celeriac.brokers.base import Delivery
from celeriac.context import Request, custom_headers
from celeriac.exceptions import MessageDecodeError, NotRegistered
from celeriac.message import CONTENT_TYPES, PICKLE, TaskMessage, decode, peek_task_id
from celeriac.middleware.base import ACK, DEAD, SETTLED, Outcome, Pipeline, Rejection, TaskRun
from celeriac.pools.base import JobInfo, Pool
from celeriac.worker.run import failure_record, run_task

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

log = logging.getLogger("celeriac.worker")


class Executor:
    """Processes one delivery at a time per job; shared by every job of a process."""

    def __init__(self, app: Celeriac, pool: Pool, pipeline: Pipeline,
                 early_ack: Callable[[Delivery], None]) -> None:
        self.app = app
        self.pool = pool
        self.pipeline = pipeline
        self.early_ack = early_ack
        self.accept = {CONTENT_TYPES.get(c, c) for c in app.conf.accept_content}
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
            return Outcome(ACK, record=None if run.ignore_result else skipped)
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
            serializer="pickle" if message.content_type == PICKLE else "json",
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
        if record.status == "SUCCESS":
            log.info("task %s[%s] succeeded in %.3fs", task.name, run.request.id, run.runtime)
        else:
            outcome = {"FAILURE": "failed", "REVOKED": "was revoked"}.get(
                record.status, "will be retried")
            log.warning("task %s[%s] %s after %.3fs: %s: %s", task.name, run.request.id, outcome,
                        run.runtime, record.exc_type, record.exc_message)
        return Outcome(ACK if acks_late else SETTLED, ran=True,
                       record=None if run.ignore_result else record)
