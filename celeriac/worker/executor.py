"""From a delivery to a settled message: decode, look up, run, store, decide.

The executor runs inside a pool job (a thread, the main thread or a greenlet).
It returns what should happen to the message -- ack it, or dead-letter it with a
reason -- and the result to store; the consumer stores results and settles
messages in batches (one transaction for many tasks, results before acks). A message that cannot be
processed (malformed, unknown task) is dead-lettered with the reason and, where
a task id is known, a FAILURE result is stored so that ``get()`` does not wait
forever.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.backends.base import REVOKED, ResultRecord
from celeriac.brokers.base import Delivery
from celeriac.context import Request
from celeriac.errors import BackendError, MessageDecodeError, NotRegistered
from celeriac.message import CONTENT_TYPES, TaskMessage, decode, peek_task_id
from celeriac.pools.base import JobInfo, Pool
from celeriac.worker.run import failure_record, run_task
from celeriac.worker.status import StatusWriter

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

log = logging.getLogger("celeriac.worker")

ACK = "ack"
DEAD = "dead"
RETRY_LATER = "retry-later"
#: The message was already acked before the task ran (acks_late=False).
SETTLED = "settled"


@dataclass(frozen=True)
class Outcome:
    """What to do with a message once its job is over."""

    action: str
    reason: str = ""
    #: True when the task body started (counts towards max_tasks_per_child).
    ran: bool = False
    #: The result to store before the message is settled (None: nothing to store).
    record: ResultRecord | None = None


class Executor:
    """Processes one delivery at a time per job; shared by every job of a process."""

    def __init__(self, app: Celeriac, pool: Pool, status: StatusWriter,
                 early_ack: Callable[[Delivery], None]) -> None:
        self.app = app
        self.pool = pool
        self.status = status
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
            record = failure_record(task_id, name, exc) if task_id else None
            return Outcome(DEAD, f"malformed message: {exc}", record=record)
        try:
            task = self.app.get_task(message.task)
        except NotRegistered as exc:
            log.error("dead-lettered task %s[%s] from queue %r: %s", message.task, message.id,
                      delivery.queue, exc)
            record = None if message.ignore_result else failure_record(
                message.id, message.task, exc, message.retries)
            return Outcome(DEAD, f"unknown task {message.task!r}", record=record)
        if message.expires is not None and time.time() > message.expires:
            log.info("task %s[%s] expired; not running it", task.name, message.id)
            revoked = None if message.ignore_result else ResultRecord(
                task_id=message.id, status=REVOKED, name=task.name, exc_type="TaskRevokedError",
                exc_message="expired", date_done=time.time())
            return Outcome(ACK, record=revoked)
        return self._run(delivery, message, task)

    def _run(self, delivery: Delivery, message: TaskMessage, task: Task[Any, Any]) -> Outcome:
        acks_late = task.acks_late
        if not acks_late:
            self.early_ack(delivery)
        hard = message.timelimit[0] or task.time_limit
        soft = message.timelimit[1] or task.soft_time_limit
        ignore = message.ignore_result or task.ignore_result
        self.status.started(delivery, message.id, task.name, hard, ignore)
        request = Request(
            id=message.id, task=task.name, args=message.args, kwargs=message.kwargs,
            retries=message.retries, root_id=message.root_id, parent_id=message.parent_id,
            group=message.group, eta=message.eta, expires=message.expires,
            delivery_info={"routing_key": delivery.queue, "priority": delivery.priority},
            hostname=self.hostname, queue=delivery.queue, delivery_count=delivery.delivery_count)
        try:
            if task.track_started and not ignore:
                self._store(ResultRecord(task_id=message.id, status="STARTED", name=task.name,
                                         retries=message.retries))
            started = time.monotonic()
            guard = self.pool.limits(soft, hard, JobInfo(delivery.id, task.name, message.id))
            record = run_task(task, request, guard)
            elapsed = time.monotonic() - started
        finally:
            self.status.finished(delivery)
        if record.status == "SUCCESS":
            log.info("task %s[%s] succeeded in %.3fs", task.name, message.id, elapsed)
        else:
            outcome = "failed" if record.status == "FAILURE" else "will be retried"
            log.warning("task %s[%s] %s after %.3fs: %s: %s", task.name, message.id, outcome,
                        elapsed, record.exc_type, record.exc_message)
        return Outcome(ACK if acks_late else SETTLED, ran=True, record=None if ignore else record)

    def _store(self, record: ResultRecord) -> None:
        try:
            self.app.backend.store(record)
        except BackendError as exc:
            log.error("could not store the state of %s: %s", record.task_id, exc)
