"""Signals: Celery's hooks, under Celery's names and calling convention.

Integrations (Sentry, OpenTelemetry, metrics, database-session clean-up, audit
logs) connect receivers to these and work unchanged::

    from celeriac.signals import task_failure, task_prerun

    @task_failure.connect
    def report(sender=None, task_id=None, exception=None, **kwargs):
        ...

    @task_prerun.connect(sender="tasks.add")      # only for that task
    def before_add(sender=None, **kwargs): ...

A receiver is called as ``receiver(signal=signal, sender=sender, **arguments)``
and must accept ``**kwargs`` (new arguments may be added; connecting one that
does not is an error). A receiver that raises is logged with its name and the
others still run: a broken receiver never stops a task from being published,
run, stored or acked.

Signals are dispatched from the hook pipeline (:mod:`celeriac.middleware.signals`)
and from logging set-up (:mod:`celeriac.worker.logs`); ``docs/signals.md`` lists
which process sends each one, in which pools, and with which arguments. Sending
a signal with no receiver connected costs one truth test of an empty list.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar, overload

from celeriac.task import Task

log = logging.getLogger("celeriac.signals")

F = TypeVar("F", bound=Callable[..., Any])

#: How a connection is found again: (receiver identity or dispatch uid, sender identity).
LookupKey = tuple[Hashable, Hashable]

#: ``connect(retry=True)``: seconds before the first new attempt, added per attempt, at most.
RETRY_FIRST_DELAY = 2.0
RETRY_DELAY_STEP = 2.0
RETRY_MAX_DELAY = 30.0


def _sender_key(sender: Any) -> Hashable:
    """How a sender is matched: strings (task names, node names) by value, a task by its
    name (so ``sender=add`` and ``sender="tasks.add"`` are the same filter, whichever of
    the two a signal sends), anything else by identity."""
    if sender is None or isinstance(sender, str):
        return sender
    if isinstance(sender, Task):
        return sender.name
    return id(sender)


def _receiver_key(receiver: Callable[..., Any]) -> Hashable:
    """Bound methods are new objects on each access: key them by (instance, function)."""
    self = getattr(receiver, "__self__", None)
    func = getattr(receiver, "__func__", None)
    if self is not None and func is not None:
        return (id(self), id(func))
    return id(receiver)


def describe(receiver: Callable[..., Any]) -> str:
    """``module.qualname`` of a receiver, for log lines."""
    module = getattr(receiver, "__module__", None)
    name = getattr(receiver, "__qualname__", None) or repr(receiver)
    return f"{module}.{name}" if module else name


def _accepts_kwargs(receiver: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(receiver).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): trust it
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class Signal:
    """A named hook that any number of receivers can connect to.

    Constructed as in Celery, ``Signal(name="my_signal", providing_args={...})``;
    ``providing_args`` only documents the arguments, and ``use_caching`` is
    accepted and has no effect (finding the receivers of a send is one pass over
    a short list).
    """

    def __init__(self, providing_args: Iterable[str] | None = None, use_caching: bool = False,
                 name: str | None = None) -> None:
        if isinstance(providing_args, str):
            raise TypeError(
                f"Signal({providing_args!r}): the first argument is providing_args, a set of "
                f"argument names; give the name as Signal(name={providing_args!r})")
        self.name = name
        self.providing_args = set(providing_args or ())
        self.use_caching = use_caching
        self.lock = threading.Lock()
        #: ``[(lookup key, receiver or weak reference to it)]`` in connection order, as in
        #: Celery. Replaced, never changed in place, so ``send`` reads it without the lock;
        #: an empty list is what lets senders skip building arguments nobody reads.
        self.receivers: list[tuple[LookupKey, Any]] = []
        #: Set (only set: it runs inside garbage collection, maybe while this thread holds
        #: the lock) when a weakly held receiver died; the next connect or send tidies up.
        self._dead = False

    def __repr__(self) -> str:
        return f"<Signal: {self.name} providing_args={self.providing_args!r}>"

    __str__ = __repr__

    # -- connecting ------------------------------------------------------------------------
    @overload
    def connect(self, receiver: F, sender: Any = None, weak: bool = True,
                dispatch_uid: Hashable | None = None, retry: bool = False) -> F: ...

    @overload
    def connect(self, receiver: None = None, sender: Any = None, weak: bool = True,
                dispatch_uid: Hashable | None = None, retry: bool = False
                ) -> Callable[[F], F]: ...

    def connect(self, receiver: Callable[..., Any] | None = None, sender: Any = None,
                weak: bool = True, dispatch_uid: Hashable | None = None,
                retry: bool = False) -> Any:
        """Connect ``receiver``; usable as ``@sig.connect`` or ``@sig.connect(sender=...)``.

        ``sender`` limits it to one sender (for task signals a task name or a task
        object: either matches both). ``weak=True`` (the default, as in Celery) holds
        the receiver weakly: a receiver defined inside a function goes away with it;
        pass ``weak=False`` to keep it. ``dispatch_uid`` makes connecting twice (a
        module imported twice) connect once. ``retry=True`` calls a receiver that
        raises again, after 2, 4, ... up to 30 seconds, until it succeeds -- the
        sender (a publishing producer, a running task) waits meanwhile, as in Celery.
        Returns the receiver, so the decorator leaves the function as it was.
        """
        if receiver is None:
            def decorator(fn: F) -> F:
                self.connect(fn, sender, weak, dispatch_uid, retry)
                return fn

            return decorator
        if not callable(receiver):
            raise TypeError(f"{self.name}.connect: receiver {receiver!r} is not callable")
        if not _accepts_kwargs(receiver):
            raise ValueError(f"{self.name}.connect: receiver {describe(receiver)} must accept "
                             "**kwargs (signals pass their arguments by name, and may add more)")
        target: Callable[..., Any] = receiver
        if retry:
            dispatch_uid = _receiver_key(receiver) if dispatch_uid is None else dispatch_uid
            target, weak = self._retrying(receiver), False
        key: LookupKey = (_receiver_key(receiver) if dispatch_uid is None else dispatch_uid,
                          _sender_key(sender))
        held = self._hold(target) if weak else target
        with self.lock:
            current = self._tidied()
            if all(existing != key for existing, _ in current):
                current = [*current, (key, held)]
            self.receivers = current
        return receiver

    def _hold(self, receiver: Callable[..., Any]) -> Any:
        """A weak reference to ``receiver`` (a strong one for objects that cannot have
        weak references, such as some builtins: they live for ever anyway)."""
        try:
            if getattr(receiver, "__self__", None) is not None and hasattr(receiver, "__func__"):
                return weakref.WeakMethod(receiver, self._mark_dead)
            return weakref.ref(receiver, self._mark_dead)
        except TypeError:
            return receiver

    def _mark_dead(self, _ref: Any) -> None:
        self._dead = True

    def _tidied(self) -> list[tuple[LookupKey, Any]]:
        """The receivers without dead weak references (call with the lock held)."""
        if not self._dead:
            return self.receivers
        self._dead = False
        return [(key, held) for key, held in self.receivers
                if not (isinstance(held, weakref.ref) and held() is None)]

    def _retrying(self, receiver: Callable[..., Any]) -> Callable[..., Any]:
        name = describe(receiver)

        @functools.wraps(receiver)
        def retry_until_it_succeeds(*args: Any, **kwargs: Any) -> Any:
            delay = RETRY_FIRST_DELAY
            while True:
                try:
                    return receiver(*args, **kwargs)
                except Exception as exc:
                    log.error("receiver %s of signal %s raised %r; retrying in %.0fs", name,
                              self.name, exc, delay)
                    time.sleep(delay)
                    delay = min(delay + RETRY_DELAY_STEP, RETRY_MAX_DELAY)

        retry_until_it_succeeds.__qualname__ += " (retried)"  # its name in log lines
        return retry_until_it_succeeds

    def disconnect(self, receiver: Callable[..., Any] | None = None, sender: Any = None,
                   weak: bool | None = None, dispatch_uid: Hashable | None = None) -> bool:
        """Disconnect a receiver (by itself or its ``dispatch_uid``, and the ``sender`` it
        was connected for); True if it was connected. ``weak`` is accepted and ignored."""
        if receiver is None and dispatch_uid is None:
            raise TypeError(f"{self.name}.disconnect needs a receiver or a dispatch_uid")
        who = dispatch_uid if dispatch_uid is not None else _receiver_key(receiver)  # type: ignore[arg-type]
        key: LookupKey = (who, _sender_key(sender))
        with self.lock:
            current = self._tidied()
            kept = [entry for entry in current if entry[0] != key]
            self.receivers = kept
            return len(kept) != len(current)

    # -- sending ---------------------------------------------------------------------------
    def _live(self, sender: Any) -> list[Callable[..., Any]]:
        if self._dead:
            with self.lock:
                self.receivers = self._tidied()
        wanted = _sender_key(sender)
        live = []
        for (_, for_sender), held in self.receivers:
            if for_sender is None or for_sender == wanted:
                receiver = held() if isinstance(held, weakref.ref) else held
                if receiver is not None:
                    live.append(receiver)
        return live

    def has_listeners(self, sender: Any = None) -> bool:
        """True when a send from ``sender`` would reach at least one receiver."""
        return bool(self._live(sender))

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver connected for ``sender``; return (receiver, response) pairs.

        A receiver that raises is logged with its name and its response is the
        exception: the remaining receivers still run, and the caller never sees it.
        """
        if not self.receivers:
            return []
        responses: list[tuple[Callable[..., Any], Any]] = []
        for receiver in self._live(sender):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                log.exception("receiver %s of signal %s raised %r; ignoring it",
                              describe(receiver), self.name, exc)
                responses.append((receiver, exc))
            else:
                responses.append((receiver, response))
        return responses

    #: Celery's (and Django's) name for the same thing: receivers are always isolated here.
    send_robust = send


# -- producer: any process that publishes a task -----------------------------------------
#: Before a task message is published; receivers may add to ``headers`` (trace context).
before_task_publish = Signal(name="before_task_publish", providing_args={
    "body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"})
#: After a task message was published.
after_task_publish = Signal(name="after_task_publish",
                            providing_args={"body", "exchange", "routing_key", "headers"})

# -- tasks, in the worker process (and in eager runs) ------------------------------------
task_received = Signal(name="task_received", providing_args={"request"})
task_prerun = Signal(name="task_prerun", providing_args={"task_id", "task", "args", "kwargs"})
task_postrun = Signal(name="task_postrun", providing_args={
    "task_id", "task", "args", "kwargs", "retval", "state"})
task_success = Signal(name="task_success", providing_args={"result"})
task_failure = Signal(name="task_failure", providing_args={
    "task_id", "exception", "args", "kwargs", "traceback", "einfo"})
task_retry = Signal(name="task_retry", providing_args={"request", "reason", "einfo"})
task_revoked = Signal(name="task_revoked",
                      providing_args={"request", "terminated", "signum", "expired"})
task_rejected = Signal(name="task_rejected", providing_args={"message", "exc"})
task_unknown = Signal(name="task_unknown", providing_args={"message", "exc", "name", "id"})
task_internal_error = Signal(name="task_internal_error", providing_args={
    "task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"})

# -- the app ----------------------------------------------------------------------------
#: Before ``app.finalize()`` imports the ``imports`` and ``include`` modules (in the
#: supervisor, each worker process, and any process that finalizes); sender is the app.
import_modules = Signal(name="import_modules")

# -- the worker node (the supervisor) ------------------------------------------------------
#: First signal of ``celeriac worker``; sender is the node name. Settings a receiver
#: changes in ``conf`` reach the worker processes too.
celeryd_init = Signal(name="celeryd_init", providing_args={"instance", "conf", "options"})
worker_init = Signal(name="worker_init")
#: After the node is set up, before it starts its worker processes; sender is the node name.
celeryd_after_setup = Signal(name="celeryd_after_setup", providing_args={"instance", "conf"})
worker_ready = Signal(name="worker_ready")
heartbeat_sent = Signal(name="heartbeat_sent")
worker_shutting_down = Signal(name="worker_shutting_down",
                              providing_args={"sig", "how", "exitcode"})
worker_shutdown = Signal(name="worker_shutdown")

# -- each worker process ------------------------------------------------------------------
worker_process_init = Signal(name="worker_process_init")
worker_process_shutdown = Signal(name="worker_process_shutdown",
                                 providing_args={"pid", "exitcode"})

# -- logging, in the supervisor and in each worker process -----------------------------
_LOGGING_ARGS = {"loglevel", "logfile", "format", "colorize"}
#: If any receiver is connected, celeriac does not configure logging itself.
setup_logging = Signal(name="setup_logging", providing_args=_LOGGING_ARGS)
after_setup_logger = Signal(name="after_setup_logger", providing_args={"logger", *_LOGGING_ARGS})
after_setup_task_logger = Signal(name="after_setup_task_logger",
                                 providing_args={"logger", *_LOGGING_ARGS})

# -- beat (celeriac beat, worker -B): sender is the Beat -----------------------------------
beat_init = Signal(name="beat_init")
beat_embedded_init = Signal(name="beat_embedded_init")

__all__ = [
    "Signal",
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "before_task_publish",
    "celeryd_after_setup",
    "celeryd_init",
    "heartbeat_sent",
    "import_modules",
    "setup_logging",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
]
