"""The hook pipeline: one typed mechanism that every cross-cutting concern hangs on.

A :class:`Middleware` has one no-op method per moment in a message's life --
published, received, rejected, about to run, failed, finished, settled -- and
in a worker process's. Each concern celeriac has (status reporting to the
supervisor, expiry and revocation, ``track_started``, autoretry, Task class
handlers, Celery's signals, task events, result storage, recycling) is one
middleware in its own module beside this one, and overrides only the hooks it
needs. A :class:`Pipeline` calls them:

* ``before_*`` hooks (and ``message_*``, ``check_run``, ``task_error``) in
  order; ``after_*`` hooks in reverse order, so the first middleware wraps the
  others like the outermost layer;
* a hook that raises is logged with the middleware's name and the others still
  run: a broken hook never loses a message;
* the pipeline notes at construction which middleware override which hook, so
  a hook nobody overrides costs nothing on the hot path.

The methods are typed, so mypy checks every middleware against this class;
there is no dispatch by building method names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.exceptions import ExceptionInfo, RunLater

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import ResultRecord
    from celeriac.brokers.base import Delivery
    from celeriac.context import Request
    from celeriac.message import Envelope, TaskMessage
    from celeriac.task import Task
    from celeriac.worker.supervisor import Supervisor

log = logging.getLogger("celeriac.middleware")

M = TypeVar("M", bound="Middleware")

#: What to do with a message once its job is over (the ``action`` of an :class:`Outcome`).
ACK = "ack"
DEAD = "dead"
RETRY_LATER = "retry-later"
#: Back to its queue at once, this delivery counted (a task raised ``Reject(requeue=True)``).
REQUEUE = "requeue"
#: The message was already acked before the task ran (acks_late=False).
SETTLED = "settled"
#: Back to its queue, uncharged, due in ``Outcome.delay`` seconds: the task did not start
#: because it is over a rate or concurrency limit (:mod:`celeriac.middleware.limits`).
DEFER = "defer"


@dataclass(frozen=True)
class Outcome:
    """What to do with a message once its job is over, and the result to store first."""

    action: str
    reason: str = ""
    #: True when the task body started (counts towards max_tasks_per_child).
    ran: bool = False
    #: The result to store before the message is settled (None: nothing to store).
    record: ResultRecord | None = None
    #: DEFER: seconds until the message is due again.
    delay: float = 0.0


#: One finished message on its way to the broker: the delivery and what to do with it.
Finished = tuple["Delivery", Outcome]


@dataclass(slots=True)
class TaskRun:
    """One run of a task as the hooks see it; hooks fill it in as the run goes on
    (slots: one is built for every task)."""

    task: Task[Any, Any]
    request: Request
    #: The broker's delivery (None for an eager run).
    delivery: Delivery | None = None
    message: TaskMessage | None = None
    #: The per-call hard and soft time limits in force.
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool = False
    #: time.time() when the task was received and when its body started.
    received_at: float = field(default_factory=time.time)
    started_at: float = 0.0
    #: Seconds the body ran.
    runtime: float = 0.0
    #: The outcome: SUCCESS, FAILURE, RETRY or REVOKED (set before ``after_task``).
    record: ResultRecord | None = None
    #: The body's return value (SUCCESS).
    retval: Any = None
    #: The exception of a failure or retry, with its traceback.
    einfo: ExceptionInfo | None = None
    #: Why it did not run, or was stopped ("expired", "revoked", "terminated"), for REVOKED.
    revoked: str = ""
    #: The signal name a terminate asked for (``revoke(terminate=True, signal=...)``).
    signal: str | None = None
    #: A run that raised ``Reject(requeue=True)`` (status REJECTED) whose message goes back
    #: to its queue: False when it cannot (acked before the run, or on its last delivery),
    #: and the run then ends as a FAILURE would.
    requeue: bool = False

    @property
    def name(self) -> str:
        """The name logs and events give this run: the message's shadow name
        (``apply_async(shadow=...)``), else the task's, as Celery's worker does."""
        return self.request.shadow or self.task.name


@dataclass(frozen=True)
class Rejection:
    """A message the worker could not run: malformed, unknown task, or an internal error."""

    delivery: Delivery
    reason: str
    exc: BaseException
    #: The task name and id when they could be read from the message.
    task_name: str | None = None
    task_id: str | None = None
    #: "malformed", "unknown" (no such task), "refused" (a task the broker cannot run, e.g.
    #: a hard time limit above RabbitMQ's consumer_timeout) or "internal" (the worker
    #: failed around it).
    kind: str = "malformed"


class Middleware:
    """Base class of every hook; each method is a no-op here, override what you need."""

    # -- producer ---------------------------------------------------------------------
    def before_publish(self, app: Celeriac, envelope: Envelope) -> None:
        """A task message is about to be encoded and published (headers may still change)."""

    def after_publish(self, app: Celeriac, envelopes: Sequence[Envelope]) -> None:
        """Task messages were published (one broker call)."""

    def watches_publish(self) -> bool:
        """Whether the publish hooks want this send's messages now (a middleware that only
        sometimes does, such as signals with no receiver, says no, and the producer then
        neither calls them nor keeps the messages)."""
        return _overrides(self, "before_publish") or _overrides(self, "after_publish")

    # -- a worker node (in the supervisor) ------------------------------------------------
    def node_starting(self, supervisor: Supervisor) -> None:
        """``celeriac worker`` is starting; no worker process runs yet."""

    def node_ready(self, supervisor: Supervisor) -> None:
        """Every worker process of the node reported ready (once per node)."""

    def node_stopping(self, supervisor: Supervisor, signal_name: str, how: str) -> None:
        """A warm (``how="Warm"``) or cold (``"Cold"``) shutdown began."""

    def node_stopped(self, supervisor: Supervisor) -> None:
        """Every worker process is gone; the node is about to exit."""

    def heartbeat(self, supervisor: Supervisor, info: dict[str, Any]) -> None:
        """The node recorded its heartbeat (``info`` is what ``celeriac status`` shows)."""

    def node_tick(self, supervisor: Supervisor) -> None:
        """One turn of the supervisor's loop (about every 0.1 s): for periodic work
        (reading control commands). Keep it short: the supervisor watches children."""

    # -- a worker process ---------------------------------------------------------------
    def process_started(self, app: Celeriac) -> None:
        """The worker process is ready to take messages (its pool started)."""

    def process_stopping(self, app: Celeriac, exitcode: int) -> None:
        """The worker process is about to exit."""

    def tick(self) -> None:
        """One turn of the consumer's loop (at least every 50 ms, more often when busy):
        for periodic work such as flushing batched events or polling revocations. It runs
        on the consumer's loop, so it must be cheap when there is nothing to do."""

    # -- one message --------------------------------------------------------------------
    def message_received(self, run: TaskRun) -> None:
        """A message was decoded and its task found; it has not started."""

    def message_rejected(self, rejection: Rejection) -> None:
        """A message cannot be run (it goes to the dead-letter store)."""

    def check_run(self, run: TaskRun) -> ResultRecord | None:
        """Return a REVOKED record to stop the task from running (expired, revoked), or
        raise :class:`~celeriac.exceptions.RunLater` when the check cannot be made now."""
        return None

    def task_skipped(self, run: TaskRun) -> None:
        """``check_run`` stopped the task; ``run.record`` says why."""

    def before_task(self, run: TaskRun) -> None:
        """The task body is about to run (inside its request context)."""

    def task_error(self, run: TaskRun, exc: Exception) -> ResultRecord | None:
        """The body raised ``exc``; return a record to use instead of FAILURE (autoretry)."""
        return None

    def after_task(self, run: TaskRun) -> None:
        """The body ended; ``run.record`` holds the outcome (reverse order)."""

    # -- settling -----------------------------------------------------------------------
    def before_settle(self, batch: list[Finished]) -> list[Finished]:
        """Finished messages are about to be acked: store what must be stored first."""
        return batch

    def after_settle(self, batch: list[Finished]) -> None:
        """Finished messages were acked, dead-lettered or requeued (reverse order)."""


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


#: Every hook name, in the order of :class:`Middleware`.
HOOKS = tuple(name for name, value in vars(Middleware).items()
              if callable(value) and not name.startswith("_") and name != "watches_publish")


class Pipeline:
    """An ordered list of middleware, called hook by hook with each failure isolated.

    Each hook's loop is written out (no generic dispatcher, no closures): these
    run several times per task on the hot path.
    """

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.middleware: list[Middleware] = list(middleware)
        self._index()

    def add(self, middleware: Middleware, *, before: type[Middleware] | None = None) -> None:
        """Add ``middleware`` at the end, or just before the first of type ``before``."""
        at = len(self.middleware)
        if before is not None:
            at = next((i for i, m in enumerate(self.middleware) if isinstance(m, before)), at)
        self.middleware.insert(at, middleware)
        self._index()

    def find(self, kind: type[M]) -> M | None:
        """The first middleware of type ``kind``, or None."""
        return next((m for m in self.middleware if isinstance(m, kind)), None)

    def _index(self) -> None:
        by_hook = {hook: [m for m in self.middleware if _overrides(m, hook)] for hook in HOOKS}
        self._in_order = by_hook
        self._reversed = {hook: found[::-1] for hook, found in by_hook.items()}
        #: False when no middleware watches publishing: the producer skips building hooks' input.
        self.publish_hooks = bool(by_hook["before_publish"] or by_hook["after_publish"])
        self._publishers = [m for m in self.middleware
                            if _overrides(m, "before_publish") or _overrides(m, "after_publish")]

    def publish_watched(self) -> bool:
        """True when some publish hook wants the messages of a send starting now."""
        return self.publish_hooks and any(m.watches_publish() for m in self._publishers)

    @staticmethod
    def _failed(middleware: Middleware, hook: str) -> None:
        log.exception("%s hook of %s raised; ignoring it", hook, type(middleware).__name__)

    def before_publish(self, app: Celeriac, envelope: Envelope) -> None:
        for m in self._in_order["before_publish"]:
            try:
                m.before_publish(app, envelope)
            except Exception:
                self._failed(m, "before_publish")

    def after_publish(self, app: Celeriac, envelopes: Sequence[Envelope]) -> None:
        for m in self._reversed["after_publish"]:
            try:
                m.after_publish(app, envelopes)
            except Exception:
                self._failed(m, "after_publish")

    def node_starting(self, supervisor: Supervisor) -> None:
        for m in self._in_order["node_starting"]:
            try:
                m.node_starting(supervisor)
            except Exception:
                self._failed(m, "node_starting")

    def node_ready(self, supervisor: Supervisor) -> None:
        for m in self._in_order["node_ready"]:
            try:
                m.node_ready(supervisor)
            except Exception:
                self._failed(m, "node_ready")

    def node_stopping(self, supervisor: Supervisor, signal_name: str, how: str) -> None:
        for m in self._reversed["node_stopping"]:
            try:
                m.node_stopping(supervisor, signal_name, how)
            except Exception:
                self._failed(m, "node_stopping")

    def node_stopped(self, supervisor: Supervisor) -> None:
        for m in self._reversed["node_stopped"]:
            try:
                m.node_stopped(supervisor)
            except Exception:
                self._failed(m, "node_stopped")

    def heartbeat(self, supervisor: Supervisor, info: dict[str, Any]) -> None:
        for m in self._in_order["heartbeat"]:
            try:
                m.heartbeat(supervisor, info)
            except Exception:
                self._failed(m, "heartbeat")

    def node_tick(self, supervisor: Supervisor) -> None:
        for m in self._in_order["node_tick"]:
            try:
                m.node_tick(supervisor)
            except Exception:
                self._failed(m, "node_tick")

    def tick(self) -> None:
        for m in self._in_order["tick"]:
            try:
                m.tick()
            except Exception:
                self._failed(m, "tick")

    def process_started(self, app: Celeriac) -> None:
        for m in self._in_order["process_started"]:
            try:
                m.process_started(app)
            except Exception:
                self._failed(m, "process_started")

    def process_stopping(self, app: Celeriac, exitcode: int) -> None:
        for m in self._reversed["process_stopping"]:
            try:
                m.process_stopping(app, exitcode)
            except Exception:
                self._failed(m, "process_stopping")

    def message_received(self, run: TaskRun) -> None:
        for m in self._in_order["message_received"]:
            try:
                m.message_received(run)
            except Exception:
                self._failed(m, "message_received")

    def message_rejected(self, rejection: Rejection) -> None:
        for m in self._in_order["message_rejected"]:
            try:
                m.message_rejected(rejection)
            except Exception:
                self._failed(m, "message_rejected")

    def check_run(self, run: TaskRun) -> ResultRecord | None:
        for m in self._in_order["check_run"]:
            try:
                record = m.check_run(run)
            except RunLater:
                raise  # not a broken hook: the check itself says "not now"
            except Exception:
                self._failed(m, "check_run")
                continue
            if record is not None:
                return record
        return None

    def task_skipped(self, run: TaskRun) -> None:
        for m in self._reversed["task_skipped"]:
            try:
                m.task_skipped(run)
            except Exception:
                self._failed(m, "task_skipped")

    def before_task(self, run: TaskRun) -> None:
        for m in self._in_order["before_task"]:
            try:
                m.before_task(run)
            except Exception:
                self._failed(m, "before_task")

    def task_error(self, run: TaskRun, exc: Exception) -> ResultRecord | None:
        for m in self._in_order["task_error"]:
            try:
                record = m.task_error(run, exc)
            except Exception:
                self._failed(m, "task_error")
                continue
            if record is not None:
                return record
        return None

    def after_task(self, run: TaskRun) -> None:
        for m in self._reversed["after_task"]:
            try:
                m.after_task(run)
            except Exception:
                self._failed(m, "after_task")

    def before_settle(self, batch: list[Finished]) -> list[Finished]:
        for m in self._in_order["before_settle"]:
            try:
                batch = m.before_settle(batch)
            except Exception:
                self._failed(m, "before_settle")
        return batch

    def after_settle(self, batch: list[Finished]) -> None:
        for m in self._reversed["after_settle"]:
            try:
                m.after_settle(batch)
            except Exception:
                self._failed(m, "after_settle")
