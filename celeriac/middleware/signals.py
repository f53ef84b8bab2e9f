"""Celery's signals, sent from the hook pipeline (:mod:`celeriac.signals` defines them).

Every hook first tests whether its signal has a receiver at all, so a process
where nothing is connected only pays for that test. The arguments are
Celery's, so existing receivers work unchanged; ``docs/signals.md`` lists them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.backends.base import FAILURE, RETRY, REVOKED, SUCCESS
from celeriac.middleware.base import Middleware, Rejection, TaskRun

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.message import Envelope
    from celeriac.worker.supervisor import Supervisor


class SignalsMiddleware(Middleware):
    """Sends the task and worker-process signals."""

    def __init__(self, consumer: Any = None) -> None:
        #: The ``sender`` of the consumer-level signals (task_received, task_rejected...).
        self.consumer = consumer

    # -- producer -----------------------------------------------------------------------
    def before_publish(self, app: Celeriac, envelope: Envelope) -> None:
        if signals.before_task_publish.receivers:
            signals.before_task_publish.send(
                sender=envelope.headers["task"], body=(envelope.args, envelope.kwargs, envelope.embed),
                exchange="", routing_key=envelope.queue, headers=envelope.headers,
                properties=envelope.properties, declare=[], retry_policy=None)

    def after_publish(self, app: Celeriac, envelopes: Sequence[Envelope]) -> None:
        if signals.after_task_publish.receivers:
            for envelope in envelopes:
                signals.after_task_publish.send(
                    sender=envelope.headers["task"],
                    body=(envelope.args, envelope.kwargs, envelope.embed), exchange="",
                    routing_key=envelope.queue, headers=envelope.headers)

    # -- the node (supervisor) ----------------------------------------------------------
    def node_starting(self, supervisor: Supervisor) -> None:
        signals.worker_init.send(sender=supervisor)

    def node_ready(self, supervisor: Supervisor) -> None:
        signals.worker_ready.send(sender=supervisor)

    def node_stopping(self, supervisor: Supervisor, signal_name: str, how: str) -> None:
        signals.worker_shutting_down.send(sender=supervisor.node, sig=signal_name, how=how,
                                          exitcode=0)

    def node_stopped(self, supervisor: Supervisor) -> None:
        signals.worker_shutdown.send(sender=supervisor)

    def heartbeat(self, supervisor: Supervisor, info: dict[str, Any]) -> None:
        signals.heartbeat_sent.send(sender=supervisor)

    # -- the worker process -------------------------------------------------------------
    def process_started(self, app: Celeriac) -> None:
        signals.worker_process_init.send(sender=None)

    def process_stopping(self, app: Celeriac, exitcode: int) -> None:
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=exitcode)

    # -- messages -----------------------------------------------------------------------
    def message_received(self, run: TaskRun) -> None:
        if signals.task_received.receivers:
            signals.task_received.send(sender=self.consumer, request=run.request)

    def message_rejected(self, rejection: Rejection) -> None:
        if rejection.kind == "unknown":
            signals.task_unknown.send(sender=self.consumer, name=rejection.task_name,
                                      id=rejection.task_id, message=rejection.delivery,
                                      exc=rejection.exc)
        elif rejection.kind == "internal":
            signals.task_internal_error.send(
                sender=rejection.task_name, task_id=rejection.task_id, args=None, kwargs=None,
                request=None, exception=rejection.exc, traceback=rejection.exc.__traceback__,
                einfo=None)
        else:
            signals.task_rejected.send(sender=self.consumer, message=rejection.delivery,
                                       exc=rejection.exc)

    def task_skipped(self, run: TaskRun) -> None:
        if signals.task_revoked.receivers:
            signals.task_revoked.send(sender=run.task, request=run.request, terminated=False,
                                      signum=None, expired=run.revoked == "expired")

    def before_task(self, run: TaskRun) -> None:
        if signals.task_prerun.receivers:
            request = run.request
            signals.task_prerun.send(sender=run.task, task_id=request.id, task=run.task,
                                     args=request.args, kwargs=request.kwargs)

    def after_task(self, run: TaskRun) -> None:
        record, task, request = run.record, run.task, run.request
        if record is None:
            return
        status = record.status
        einfo = run.einfo
        if status == SUCCESS:
            if signals.task_success.receivers:
                signals.task_success.send(sender=task, result=run.retval)
        elif status == FAILURE and einfo is not None:
            signals.task_failure.send(sender=task, task_id=request.id, exception=einfo.exception,
                                      args=request.args, kwargs=request.kwargs,
                                      traceback=einfo.tb, einfo=einfo)
        elif status == RETRY and einfo is not None:
            signals.task_retry.send(sender=task, request=request, reason=einfo.exception,
                                    einfo=einfo)
        elif status == REVOKED:  # terminated while running: no task_postrun, as in Celery
            signals.task_revoked.send(sender=task, request=request, terminated=True,
                                      signum=run.signal, expired=False)
            return
        if signals.task_postrun.receivers:
            retval = run.retval if status == SUCCESS else (einfo.exception if einfo else None)
            signals.task_postrun.send(sender=task, task_id=request.id, task=task,
                                      args=request.args, kwargs=request.kwargs, retval=retval,
                                      state=status)
