"""Celery's signals, sent from the hook pipeline (:mod:`celeriac.signals` defines them).

Every hook first tests whether its signal has a receiver at all, so a process
where nothing is connected only pays for that test. The senders and arguments
are Celery's, so existing receivers work unchanged: a task signal's sender is
the task object, except ``before_task_publish``/``after_task_publish`` (the
task name, as in Celery); ``docs/signals.md`` lists every signal, its
arguments and the process that sends it.
"""

from __future__ import annotations

import json
import logging
import os
import signal as os_signal
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from celeriac import signals
from celeriac.exceptions import ExceptionInfo, MessageDecodeError, Retry
from celeriac.message import decode, peek_task_id
from celeriac.middleware.base import Middleware, Rejection, TaskRun
from celeriac.states import FAILURE, REJECTED, RETRY, REVOKED, SUCCESS

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.message import Envelope
    from celeriac.worker.supervisor import Supervisor

log = logging.getLogger("celeriac.signals")


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _keep_sendable(part: dict[str, Any], before: dict[str, Any], what: str, task: str) -> None:
    """Undo what ``before_task_publish`` receivers did to ``part`` (the headers or the
    properties) that would stop the message from being sent or run: a value JSON
    cannot encode is dropped (or the original restored), a removed original is put back.
    The message always goes out; the log says which key was mended."""
    for key in [k for k, v in part.items() if (k not in before or before[k] is not v)]:
        if not _encodable(part[key]):
            log.error("a before_task_publish receiver set %s %r of task %s to %r, which cannot "
                      "be encoded as JSON; %s", what, key, task, part[key],
                      "restored the original" if key in before else "dropped it")
            if key in before:
                part[key] = before[key]
            else:
                del part[key]
    for key in before.keys() - part.keys():
        log.error("a before_task_publish receiver removed %s %r of task %s; put it back",
                  what, key, task)
        part[key] = before[key]


def _signum(name: str | None) -> int | None:
    """Celery's ``signum`` is the signal's number: ``"SIGKILL"`` (or ``"KILL"``) is 9, and
    a terminate that named no signal used SIGTERM, 15."""
    name = name or "SIGTERM"
    try:
        return int(os_signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        return None


def _retry_reason(einfo: ExceptionInfo) -> BaseException:
    """Celery's ``reason`` is the :class:`Retry` exception, whose ``exc`` is the cause."""
    cause = einfo.exception
    return cause if isinstance(cause, Retry) else Retry(f"Retry: {cause!r}", exc=cause)


def _call_of(body: bytes) -> tuple[Any, Any, dict[str, Any] | None]:
    """Best-effort (args, kwargs, headers) of a message, JSON only (nothing unpickled)."""
    try:
        message = decode(body)
    except MessageDecodeError:
        return None, None, None
    return message.args, message.kwargs, message.headers


def _node_options(supervisor: Supervisor) -> dict[str, Any]:
    """``celeryd_init``'s ``options``: what the worker was asked to run, with Celery's
    names for the common ones (``hostname``, ``pool``, ``concurrency``, ``queues``)."""
    options = supervisor.options
    pools = [group.pool for group in options.groups]
    return {
        **asdict(options), "hostname": supervisor.node,
        "pool": pools[0] if len(pools) == 1 else "+".join(pools),
        "concurrency": sum(group.concurrency for group in options.groups),
        "queues": sorted({q for group in options.groups for q in group.queues}),
    }


def _pass_on(supervisor: Supervisor, before: dict[str, Any]) -> None:
    """Settings the node's start-up receivers changed in ``conf`` (``celeryd_init``'s use
    case) go to the worker processes too: they import the app afresh."""
    for key, value in supervisor.app.conf.items():
        if before.get(key) == value:
            continue
        if _encodable(value):
            supervisor.options.settings[key] = value
        else:
            log.warning("setting %s was changed by a worker start-up receiver, but %r cannot "
                        "be passed on to the worker processes (not JSON); it applies to the "
                        "supervisor only", key, value)


class SignalsMiddleware(Middleware):
    """Sends the producer, node, worker-process and task signals."""

    def __init__(self, consumer: Any = None) -> None:
        #: The ``sender`` of the consumer-level signals (task_received, task_rejected...).
        self.consumer = consumer

    # -- producer -----------------------------------------------------------------------
    def watches_publish(self) -> bool:
        return bool(signals.before_task_publish.receivers or signals.after_task_publish.receivers)

    def before_publish(self, app: Celeriac, envelope: Envelope) -> None:
        if not signals.before_task_publish.receivers:
            return
        headers, properties = envelope.headers, envelope.properties
        name = headers["task"]
        headers_before, properties_before = dict(headers), dict(properties)
        signals.before_task_publish.send(
            sender=name, body=(envelope.args, envelope.kwargs, envelope.embed),
            exchange="", routing_key=envelope.queue, headers=headers,
            properties=properties, declare=[], retry_policy=None)
        _keep_sendable(headers, headers_before, "header", name)
        _keep_sendable(properties, properties_before, "property", name)

    def after_publish(self, app: Celeriac, envelopes: Sequence[Envelope]) -> None:
        if signals.after_task_publish.receivers:
            for envelope in envelopes:
                signals.after_task_publish.send(
                    sender=envelope.headers["task"],
                    body=(envelope.args, envelope.kwargs, envelope.embed), exchange="",
                    routing_key=envelope.queue, headers=envelope.headers)

    # -- the node (supervisor) ----------------------------------------------------------
    def node_starting(self, supervisor: Supervisor) -> None:
        conf = supervisor.app.conf
        before = dict(conf)
        if signals.celeryd_init.receivers:
            signals.celeryd_init.send(sender=supervisor.node, instance=supervisor, conf=conf,
                                      options=_node_options(supervisor))
        signals.worker_init.send(sender=supervisor)
        if signals.celeryd_after_setup.receivers:
            signals.celeryd_after_setup.send(sender=supervisor.node, instance=supervisor,
                                             conf=conf)
        _pass_on(supervisor, before)

    def node_ready(self, supervisor: Supervisor) -> None:
        signals.worker_ready.send(sender=supervisor)

    def node_stopping(self, supervisor: Supervisor, signal_name: str, how: str) -> None:
        # The supervisor exits 0 after a cold shutdown too: that is the exit code it will use.
        signals.worker_shutting_down.send(sender=supervisor.node, sig=signal_name, how=how,
                                          exitcode=0)

    def node_stopped(self, supervisor: Supervisor) -> None:
        signals.worker_shutdown.send(sender=supervisor)

    def heartbeat(self, supervisor: Supervisor, info: dict[str, Any]) -> None:
        if supervisor.options.heartbeat_events:  # off with --without-heartbeat
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
            if signals.task_internal_error.receivers:
                self._internal_error(rejection)
        else:
            signals.task_rejected.send(sender=self.consumer, message=rejection.delivery,
                                       exc=rejection.exc)

    def _internal_error(self, rejection: Rejection) -> None:
        """The worker failed around a task: the sender is the task object when this
        process knows it (its name otherwise), as much of the call as can be read."""
        name, task_id = rejection.task_name, rejection.task_id
        if name is None:
            name, task_id = peek_task_id(rejection.delivery.body)
        app = getattr(self.consumer, "app", None)
        task = app.tasks.get(name) if app is not None and name else None
        args, kwargs, headers = _call_of(rejection.delivery.body)
        exc = rejection.exc
        signals.task_internal_error.send(
            sender=task or name, task_id=task_id, args=args, kwargs=kwargs, request=headers,
            exception=exc, traceback=exc.__traceback__, einfo=ExceptionInfo(exc))

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
        record, task, request, einfo = run.record, run.task, run.request, run.einfo
        if record is None:
            return
        status = record.status
        retval: Any = einfo.exception if einfo is not None else None
        if status == SUCCESS:
            retval = run.retval
            if signals.task_success.receivers:
                signals.task_success.send(sender=task, result=retval)
        elif status == FAILURE and einfo is not None:
            signals.task_failure.send(sender=task, task_id=request.id, exception=einfo.exception,
                                      args=request.args, kwargs=request.kwargs,
                                      traceback=einfo.tb, einfo=einfo)
        elif status == RETRY and einfo is not None:
            retval = _retry_reason(einfo)
            signals.task_retry.send(sender=task, request=request, reason=retval, einfo=einfo)
        elif status == REVOKED:  # terminated while running: no task_postrun, as in Celery
            signals.task_revoked.send(sender=task, request=request, terminated=True,
                                      signum=_signum(run.signal), expired=False)
            return
        if signals.task_postrun.receivers:
            signals.task_postrun.send(sender=task, task_id=request.id, task=task,
                                      args=request.args, kwargs=request.kwargs, retval=retval,
                                      state=status)
        if status == REJECTED and not run.requeue and einfo is not None and run.delivery:
            # A worker's Reject that ends the task: FAILURE is stored, so task_failure
            # is sent, after task_postrun (state REJECTED), as Celery's worker does.
            signals.task_failure.send(sender=task, task_id=request.id, exception=einfo.exception,
                                      args=request.args, kwargs=request.kwargs,
                                      traceback=einfo.tb, einfo=einfo)
