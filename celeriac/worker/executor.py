"""From a delivery to an outcome: decode, look up, check, run.

The executor runs inside a pool job (a thread, the main thread or a greenlet).
It returns what should happen to the message -- ack it, dead-letter it with a
reason, or requeue it (a task's ``Reject(requeue=True)``) -- and the result to
store; the consumer settles messages in batches (the pipeline's
``before_settle`` stores results, then the acks go out). Every concern around a
run (status reports, expiry, revocation, signals, handlers, ``track_started``,
autoretry, task events) is a hook of the pipeline (:mod:`celeriac.middleware`);
this module only does what every run needs. A message that cannot be processed
(malformed, unknown task) is dead-lettered with the reason and, where a task id
is known, a FAILURE result is stored so that ``get()`` does not wait forever.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from celeriac import serialization
from celeriac.backends.base import ResultRecord
from celeriac.brokers.base import Delivery
from celeriac.context import Request, custom_headers
from celeriac.exceptions import (
    ConfigurationError,
    MessageDecodeError,
    NotRegistered,
    Reject,
    RunLater,
)
from celeriac.message import TaskMessage, decode, peek_task_id
from celeriac.middleware.base import (
    ACK,
    DEAD,
    DEFER,
    REQUEUE,
    SETTLED,
    Outcome,
    Pipeline,
    Rejection,
    TaskRun,
)
from celeriac.middleware.limits import Limits
from celeriac.pools.base import JobInfo, Pool
from celeriac.states import FAILURE, IGNORED, REJECTED, REVOKED, SUCCESS
from celeriac.worker.consumer_timeout import limit_bound, over_bound
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
                 early_ack: Callable[[Delivery], None], node: str | None = None) -> None:
        self.app = app
        self.pool = pool
        self.pipeline = pipeline
        self.early_ack = early_ack
        self.accept = serialization.content_types(app.conf.accept_content)
        #: ``request.hostname``: the node name (``-n``), as Celery's worker gives it.
        self.hostname = node or socket.gethostname()
        #: Cluster-wide rate and concurrency limits (None in a pipeline without them).
        self.limits = pipeline.find(Limits)
        #: The longest hard time limit the broker allows (RabbitMQ's consumer_timeout), or None.
        self.limit_bound = limit_bound(app.conf)

    def ahead(self, delivery: Delivery) -> TaskRun | None:
        """``delivery``'s run, decoded and built before its start (the consumer does it
        for waiting messages while it has nothing else to do), for :meth:`handle`.

        Only what depends on the message alone: the hooks run at the start, as ever.
        None for a message that cannot run (malformed, unknown task): its start decodes
        it again and reports it there, with the dead letter and the result."""
        try:
            message = decode(delivery.body, self.accept)
            return self._prepare(delivery, message, self.app.get_task(message.task))
        except (MessageDecodeError, NotRegistered):
            return None

    def handle(self, delivery: Delivery, ready: TaskRun | None = None) -> Outcome:
        """Run ``delivery``'s task; ``ready``: its run from :meth:`ahead`, if it was built."""
        if ready is None:
            built = self._build(delivery)
            if isinstance(built, Outcome):
                return built
            run = built
        else:
            run = ready
            run.received_at = time.time()  # when it reached the pool, as for any other
        message = run.message
        assert message is not None
        too_long = over_bound(run.time_limit, self.limit_bound)
        if too_long is not None:
            return self._refuse(delivery, message, run.name, too_long)
        self.pipeline.message_received(run)
        try:
            skipped = self.pipeline.check_run(run)
        except RunLater as exc:
            log.warning("task %s[%s] goes back to queue %r for %.1fs, unrun and uncharged: %s",
                        run.name, message.id, delivery.queue, exc.delay, exc)
            return Outcome(DEFER, str(exc), delay=exc.delay)
        if skipped is not None:
            run.record = skipped
            self.pipeline.task_skipped(run)
            return Outcome(ACK, record=kept(run, skipped))
        limits = self.limits
        if limits is not None and run.task.name in limits.limited:  # unlimited: one lookup
            delay = limits.admit(run)
            if delay is not None:
                return Outcome(DEFER, "over its limit", delay=delay)
            try:
                return self._run(run)
            finally:
                limits.release(run)
        return self._run(run)

    def _build(self, delivery: Delivery) -> TaskRun | Outcome:
        """Decode ``delivery`` and build its run; a DEAD outcome for a message that cannot
        run (malformed, unknown task), rejected and, where a task id is known, with a
        FAILURE result so that ``get()`` does not wait forever."""
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
        return self._prepare(delivery, message, task)

    def _refuse(self, delivery: Delivery, message: TaskMessage, name: str,
                reason: str) -> Outcome:
        """Fail a task at receipt, unrun: dead-lettered with ``reason``, FAILURE stored."""
        exc = ConfigurationError(f"task {name} not run: {reason}")
        log.error("dead-lettered task %s[%s] from queue %r: %s", name, message.id,
                  delivery.queue, exc)
        self.pipeline.message_rejected(Rejection(delivery, str(exc), exc, name, message.id,
                                                 kind="refused"))
        record = None if message.ignore_result else failure_record(
            message.id, name, exc, message.retries)
        return Outcome(DEAD, str(exc), record=record)

    def _prepare(self, delivery: Delivery, message: TaskMessage, task: Task[Any, Any]) -> TaskRun:
        """The run's request and limits: the message's own values, else the task's."""
        headers, properties, embed = message.headers, message.properties, message.embed
        request = Request(
            id=message.id, task=task.name, args=message.args, kwargs=message.kwargs,
            retries=message.retries, root_id=message.root_id, parent_id=message.parent_id,
            group=message.group, eta=message.eta, expires=message.expires,
            delivery_info={"exchange": _exchange(properties), "routing_key": delivery.queue,
                           "priority": delivery.priority,
                           "redelivered": delivery.delivery_count > 1},
            hostname=self.hostname, queue=delivery.queue, delivery_count=delivery.delivery_count,
            priority=message.priority, timelimit=message.timelimit,
            ignore_result=message.ignore_result,
            serializer=_serializer_name(message.content_type),
            origin=headers.get("origin"), headers=custom_headers(headers),
            called_directly=False, correlation_id=properties.get("correlation_id") or message.id,
            reply_to=properties.get("reply_to"), shadow=headers.get("shadow"),
            group_index=headers.get("group_index"),
            callbacks=embed.get("callbacks"), errbacks=embed.get("errbacks"),
            chain=embed.get("chain"), chord=embed.get("chord"))
        return TaskRun(task, request, delivery, message,
                       time_limit=message.timelimit[0] or task.time_limit,
                       soft_time_limit=message.timelimit[1] or task.soft_time_limit,
                       ignore_result=message.ignore_result or task.ignore_result)

    def _run(self, run: TaskRun) -> Outcome:
        try:
            return self._execute(run)
        finally:
            # A failure's exception holds its traceback, whose frames hold the run (and
            # the task's own locals): a reference cycle that only the cycle collector
            # would free, and a worker's runs only after 100 new objects a slot
            # (celeriac.worker.heap). Every hook has seen the exception by now.
            run.einfo = None

    def _execute(self, run: TaskRun) -> Outcome:
        task, delivery = run.task, run.delivery
        assert delivery is not None
        acks_late = task.acks_late
        if not acks_late:
            self.early_ack(delivery)
        runner = partial(self.pool.run_body, is_async=task.is_async, soft=run.soft_time_limit,
                         hard=run.time_limit, job=JobInfo(delivery.id, run.name, run.request.id))
        record = run_task(run, self.pipeline, runner)
        if record.status in (IGNORED, REJECTED):
            return self._predicate(run, record, acks_late)
        if record.status == SUCCESS:
            log.info("task %s[%s] succeeded in %.3fs", run.name, run.request.id, run.runtime)
        elif record.status == FAILURE:
            _log_failure(run, record)
        else:
            outcome = "was revoked" if record.status == REVOKED else "will be retried"
            log.warning("task %s[%s] %s after %.3fs: %s: %s", run.name, run.request.id, outcome,
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

    def _predicate(self, run: TaskRun, record: ResultRecord, acks_late: bool) -> Outcome:
        """A run that raised ``Ignore`` (nothing stored, message acked) or ``Reject``:
        requeued, or else ended -- FAILURE stored and, if still ours, the message
        dead-lettered with the reason (Celery drops it: nothing is lost silently here)."""
        request, delivery = run.request, run.delivery
        assert delivery is not None
        if record.status == IGNORED:
            log.info("task %s[%s] ignored", run.name, request.id)
            return Outcome(ACK if acks_late else SETTLED, ran=True)
        if run.requeue:
            log.warning("task %s[%s] rejected its message, requeued: %s", run.name, request.id,
                        record.exc_message)
            return Outcome(REQUEUE, record.exc_message or "", ran=True)
        reason = _rejected_reason(run, record, acks_late)
        log.warning("task %s[%s] rejected its message: %s", run.name, request.id, reason)
        failure = kept(run, replace(record, status=FAILURE))
        if not acks_late:
            return Outcome(SETTLED, ran=True, record=failure)
        return Outcome(DEAD, f"task rejected its message: {reason}", ran=True, record=failure)


def _rejected_reason(run: TaskRun, record: ResultRecord, acks_late: bool) -> str:
    """Why a rejected run ends here: the task's reason, and why a requeue it asked for
    did not happen."""
    reason = record.exc_message or "no reason given"
    exc = run.einfo.exception if run.einfo is not None else None
    if not (isinstance(exc, Reject) and exc.requeue):
        return reason
    if not acks_late:
        return (f"{reason} (requeue=True, but its message was acked before the task ran: "
                "acks_late is False)")
    assert run.delivery is not None
    return (f"{reason} (requeue=True, but this was delivery {run.delivery.delivery_count} "
            f"of broker_max_deliveries={run.task.app.broker.max_deliveries})")


def _exchange(properties: dict[str, Any]) -> str:
    """The exchange a message was published to, as its sender wrote it (Celery's
    producers: ``properties.delivery_info.exchange``); celeriac has none: ``""``."""
    info = properties.get("delivery_info")
    exchange = info.get("exchange") if isinstance(info, dict) else None
    return exchange if isinstance(exchange, str) else ""


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
        log.info("task %s[%s] raised expected %s: %s", run.name, run.request.id,
                 record.exc_type, record.exc_message)
        return
    trace = f"\n{einfo.traceback.rstrip()}" if einfo is not None and einfo.traceback else ""
    log.error("task %s[%s] failed after %.3fs: %s: %s%s", run.name, run.request.id, run.runtime,
              record.exc_type, record.exc_message, trace)
