"""Signals: Celery's hooks, under Celery's names and calling convention.

Integrations (Sentry, OpenTelemetry, metrics, database-session clean-up, audit
logs) connect receivers to these and work unchanged::

    from celeriac.signals import task_failure

    @task_failure.connect
    def report(sender=None, task_id=None, exception=None, **kwargs):
        ...

    @task_prerun.connect(sender="tasks.add")      # only for that task
    def before_add(sender=None, **kwargs): ...

A receiver is called as ``receiver(signal=signal, sender=sender, **arguments)``
and must accept ``**kwargs`` (new arguments may be added). A receiver that raises
is logged with its name and the others still run: a broken receiver never stops
a task from being published, run, stored or acked.

Signals are dispatched from the worker's hook pipeline
(:mod:`celeriac.middleware.signals`); ``docs/signals.md`` lists which process
sends each one, in which pools, and with which arguments. Sending a signal with
no receiver connected costs one attribute test.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

log = logging.getLogger("celeriac.signals")

F = TypeVar("F", bound=Callable[..., Any])

#: Receiver key: (dispatch uid or receiver identity, sender identity).
_Key = tuple[Hashable, Hashable]


def _sender_key(sender: Any) -> Hashable:
    """Senders match by value for strings (task names) and by identity otherwise."""
    if sender is None or isinstance(sender, str):
        return sender
    return id(sender)


def _receiver_key(receiver: Callable[..., Any]) -> Hashable:
    """Bound methods are new objects on each access: key them by (instance, function)."""
    self = getattr(receiver, "__self__", None)
    func = getattr(receiver, "__func__", None)
    if self is not None and func is not None:
        return (id(self), id(func))
    return id(receiver)


def _reference(receiver: Callable[..., Any], weak: bool,
               on_dead: Callable[[Any], None]) -> Callable[[], Callable[..., Any] | None]:
    if not weak:
        return lambda: receiver
    if getattr(receiver, "__self__", None) is not None and hasattr(receiver, "__func__"):
        return weakref.WeakMethod(receiver, on_dead)
    try:
        return weakref.ref(receiver, on_dead)
    except TypeError:  # builtins and some callables cannot be weakly referenced
        return lambda: receiver


class Signal:
    """A named hook that any number of receivers can connect to.

    ``providing_args`` is accepted and kept only as documentation, as in Celery.
    """

    def __init__(self, name: str, providing_args: set[str] | None = None,
                 use_caching: bool = False) -> None:
        self.name = name
        self.providing_args = frozenset(providing_args or ())
        self._lock = threading.Lock()
        #: (key, sender key, weak-or-strong reference), in connection order.
        self._receivers: list[tuple[_Key, Hashable, Callable[[], Callable[..., Any] | None]]] = []
        #: False while nothing is connected: senders test it before building arguments.
        self.receivers = False

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"

    def connect(self, receiver: Callable[..., Any] | None = None, /, *, sender: Any = None,
                weak: bool = True, dispatch_uid: Hashable | None = None) -> Any:
        """Connect ``receiver``; usable as ``@sig.connect`` or ``@sig.connect(sender=...)``.

        ``sender`` limits it to one sender (a task name or task object for task
        signals). ``weak=True`` (the default, as in Celery) holds the receiver
        weakly: a receiver defined inside a function goes away with it; pass
        ``weak=False`` to keep it. ``dispatch_uid`` makes connecting twice (a
        module imported twice) connect once.
        """
        if receiver is None:
            def decorator(fn: F) -> F:
                self.connect(fn, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
                return fn

            return decorator
        if not callable(receiver):
            raise TypeError(f"{self.name}.connect: receiver {receiver!r} is not callable")
        key: _Key = (dispatch_uid if dispatch_uid is not None else _receiver_key(receiver),
                     _sender_key(sender))
        ref = _reference(receiver, weak, self._forget_dead)
        with self._lock:
            if not any(existing == key for existing, _, _ in self._receivers):
                self._receivers.append((key, key[1], ref))
            self.receivers = True
        return receiver

    def disconnect(self, receiver: Callable[..., Any] | None = None, sender: Any = None,
                   weak: bool = True, dispatch_uid: Hashable | None = None) -> bool:
        """Disconnect a receiver (by itself or its ``dispatch_uid``); True if it was connected."""
        if receiver is None and dispatch_uid is None:
            raise TypeError(f"{self.name}.disconnect needs a receiver or a dispatch_uid")
        assert receiver is not None or dispatch_uid is not None
        key: _Key = (dispatch_uid if dispatch_uid is not None
                     else _receiver_key(receiver),  # type: ignore[arg-type]
                     _sender_key(sender))
        with self._lock:
            before = len(self._receivers)
            self._receivers = [r for r in self._receivers if r[0] != key]
            self.receivers = bool(self._receivers)
            return len(self._receivers) != before

    def _forget_dead(self, _ref: Any) -> None:
        with self._lock:
            self._receivers = [r for r in self._receivers if r[2]() is not None]
            self.receivers = bool(self._receivers)

    def _live(self, sender: Any) -> list[Callable[..., Any]]:
        senders: tuple[Hashable, ...] = (None, _sender_key(sender))
        if not isinstance(sender, str) and isinstance(getattr(sender, "name", None), str):
            senders += (sender.name,)  # a task object also matches its name
        live = []
        for _, wanted, ref in list(self._receivers):
            fn = ref()
            if fn is not None and wanted in senders:
                live.append(fn)
        return live

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver connected for ``sender``; return (receiver, response) pairs.

        A receiver that raises is logged and its response is the exception: the
        remaining receivers still run, and the caller never sees the error.
        """
        if not self.receivers:
            return []
        responses: list[tuple[Callable[..., Any], Any]] = []
        for receiver in self._live(sender):
            try:
                responses.append((receiver, receiver(signal=self, sender=sender, **named)))
            except Exception as exc:
                log.exception("receiver %s of signal %s raised; ignoring it",
                              getattr(receiver, "__qualname__", repr(receiver)), self.name)
                responses.append((receiver, exc))
        return responses

    #: Celery's name for the same thing: receivers are always isolated here.
    send_robust = send


# -- producer -----------------------------------------------------------------------
#: Before a task message is published; receivers may add to ``headers`` (trace context).
before_task_publish = Signal("before_task_publish")
#: After a task message was published.
after_task_publish = Signal("after_task_publish")

# -- tasks, in the worker process (and in eager runs) ------------------------------------
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")

# -- workers ------------------------------------------------------------------------------
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutting_down = Signal("worker_shutting_down")
worker_shutdown = Signal("worker_shutdown")
heartbeat_sent = Signal("heartbeat_sent")

# -- logging ------------------------------------------------------------------------------
#: If any receiver is connected, celeriac does not configure logging itself.
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")

__all__ = [
    "Signal",
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "before_task_publish",
    "heartbeat_sent",
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
