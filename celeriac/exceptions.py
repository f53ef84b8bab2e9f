"""The one exception tree of celeriac.

Everything celeriac raises on purpose derives from :class:`CeleriacError`, so
``except CeleriacError`` catches all of it::

    CeleriacError
    ├── ConfigurationError          a setting, task option or flag is wrong
    │   └── UnknownSettingError     a misspelt name (the message carries a hint)
    ├── BrokerError                 the broker failed
    │   └── BrokerUnreachable       it cannot be reached at all
    ├── BackendError                the result backend failed
    ├── SerializationError          a value cannot be encoded or decoded
    │   └── MessageDecodeError      a message on the wire is malformed
    ├── NotRegistered               no task of that name in this app
    ├── TaskError                   a task raised a non-builtin exception (from get())
    │   ├── TimeLimitExceeded       the hard time limit killed the task
    │   ├── WorkerLostError         the process running the task died for good
    │   ├── TaskRevokedError        the task was revoked (or expired) and not run
    │   ├── MaxRetriesExceededError self.retry() with no exc when no retry was left
    │   ├── ChordError              a chord's header member failed: its body does not run
    │   └── IncompleteStream        iterdeps() met a result that is not ready yet
    ├── TimeoutError                get() waited longer than its timeout
    ├── SyncSubtaskError            get() inside a running task (also a RuntimeError)
    └── TaskPredicate               raised in a task to say how its run ends
        ├── Retry                   raised by Task.retry() to ask for a new attempt
        ├── Ignore                  store nothing, ack the message (the state stays)
        └── Reject                  reject the message: dead-letter it, or requeue it

    SoftTimeLimitExceeded (Exception)  raised *inside* a task at its soft limit
    HardTimeLimit (BaseException)      interrupts a green task at its hard limit;
                                       ``except Exception`` in user code cannot
                                       swallow it. Recorded as TimeLimitExceeded.
    Terminated (BaseException)         interrupts a task revoked with terminate=True
                                       (threads, green pools). Recorded as REVOKED.

The :class:`TaskPredicate` exceptions (``Retry``, raised by ``self.retry()``,
``Ignore`` and ``Reject``) are not failures: the worker recognises each, so user
code should let them propagate. ``docs/migrating.md`` says what ``Ignore`` and
``Reject`` do to the message and the result.

Celery's names for the same classes are aliases here, so ``except`` clauses of a
Celery app keep working: ``CeleryError`` (:class:`CeleriacError`),
``ImproperlyConfigured`` (:class:`ConfigurationError`) and ``InvalidTaskError``
(:class:`MessageDecodeError`).
"""

from __future__ import annotations


class CeleriacError(Exception):
    """Root of every error celeriac raises on purpose."""


class ConfigurationError(CeleriacError):
    """A setting, a task option, a URL or a command-line flag is wrong."""


class UnknownSettingError(ConfigurationError, KeyError):
    """A setting or option name that does not exist; the message suggests the closest one."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BrokerError(CeleriacError):
    """The broker failed to do what was asked."""


class BrokerUnreachable(BrokerError):
    """The broker cannot be reached at all (bad path, server down, refused)."""


class BackendError(CeleriacError):
    """The result backend failed to store or fetch a result."""


class SerializationError(CeleriacError, ValueError):
    """A value cannot be encoded with the chosen serializer, or decoded back."""


class MessageDecodeError(SerializationError):
    """A message taken from the broker is not a valid celeriac/Celery v2 message."""


class NotRegistered(CeleriacError, KeyError):
    """No task of that name is registered in this app."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TaskError(CeleriacError):
    """A task failed with an exception that celeriac will not re-create locally.

    Only builtin exception types are re-raised as themselves by ``AsyncResult.get()``:
    importing a class named by data from the result store would let whoever can
    write to the store run code here. Everything else arrives as this error,
    carrying what the worker recorded.
    """

    def __init__(self, exc_type: str, message: str, traceback: str | None = None) -> None:
        super().__init__(f"{exc_type}: {message}" if message else exc_type)
        self.exc_type = exc_type
        self.exc_message = message
        self.remote_traceback = traceback


class TimeLimitExceeded(TaskError):
    """The task ran past its hard time limit and its process or greenlet was killed."""

    def __init__(self, message: str = "", traceback: str | None = None) -> None:
        super().__init__("TimeLimitExceeded", message, traceback)


class WorkerLostError(TaskError):
    """The process running the task died and the task will not be delivered again."""

    def __init__(self, message: str = "", traceback: str | None = None) -> None:
        super().__init__("WorkerLostError", message, traceback)


class TaskRevokedError(TaskError):
    """The task was revoked (``revoke()``, or its ``expires`` passed) and did not finish."""

    def __init__(self, message: str = "", traceback: str | None = None) -> None:
        super().__init__("TaskRevokedError", message, traceback)


class MaxRetriesExceededError(TaskError):
    """``self.retry()`` was called without ``exc`` after the task's retries were used up
    (with ``exc``, that exception is raised instead, as in Celery)."""

    def __init__(self, message: str = "", traceback: str | None = None) -> None:
        super().__init__("MaxRetriesExceededError", message, traceback)


class ChordError(TaskError):
    """A member of a chord's header failed (or was revoked), so the chord's body is not
    run: this is stored as the body's result, naming the first failed member in header
    order, and the body's errbacks run (Celery's name and message)."""

    def __init__(self, message: str = "", traceback: str | None = None) -> None:
        super().__init__("ChordError", message, traceback)


class IncompleteStream(TaskError):
    """``AsyncResult.iterdeps()`` (without ``intermediate=True``) reached a result that
    is not ready, so the graph of its children is not known yet (Celery's name)."""

    def __init__(self, message: str = "", traceback: str | None = None) -> None:
        super().__init__("IncompleteStream", message, traceback)


class TimeoutError(CeleriacError):
    """``AsyncResult.get()`` waited longer than its timeout."""


class SyncSubtaskError(CeleriacError, RuntimeError):
    """``get()`` was called inside a task running on a worker: waiting there for another
    task can deadlock the pool. A ``RuntimeError``, as Celery raises; pass
    ``disable_sync_subtasks=False`` to wait anyway."""


class RunLater(CeleriacError):
    """Raised by a middleware's ``check_run`` that cannot decide yet whether a message may
    run (the check needs the result backend, and it failed): the message goes back to its
    queue uncharged, due in ``delay`` seconds, instead of running unchecked or being lost."""

    def __init__(self, reason: str, delay: float = 1.0) -> None:
        super().__init__(reason)
        self.delay = delay


class TaskPredicate(CeleriacError):
    """Raised by a task to say how its run ends, other than by returning or failing."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry()``: the worker re-sends the task and records RETRY."""

    def __init__(
        self,
        message: str = "",
        exc: BaseException | None = None,
        when: float | None = None,
    ) -> None:
        super().__init__(message or (f"Retry in {when}s" if when is not None else "Retry"))
        self.exc = exc
        self.when = when


class Ignore(TaskPredicate):
    """Raised by a task to end its run with nothing stored: its state stays what it was
    (PENDING, or a state the task set itself with ``update_state``), its message is
    acked, and no success, failure or retry handler runs (``task_postrun`` does, with
    state ``IGNORED``). For a task that settles its own result, or hands its work on."""


class Reject(TaskPredicate):
    """Raised by a task to reject its message (``raise Reject(reason, requeue=False)``).

    ``requeue=False``: the message is not run again. It goes to the dead-letter store
    with ``reason`` (Celery drops it, or hands it to the queue's dead-letter exchange)
    and FAILURE is stored, carrying this exception. ``requeue=True``: the message goes
    back to its queue, nothing stored; each delivery still counts, so a task that
    always rejects ends in the dead-letter store after ``broker_max_deliveries``.
    Only a message acked after its task runs (``acks_late``, the default) can be
    rejected: with ``acks_late=False`` it is gone already, and FAILURE is stored.
    """

    def __init__(self, reason: object = None, requeue: bool = False) -> None:
        super().__init__(reason, requeue)  # Celery's args, so copies compare alike
        self.reason = reason
        self.requeue = requeue

    def __str__(self) -> str:
        """The reason alone: it is what the result and the dead letter record."""
        return "" if self.reason is None else str(self.reason)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class SoftTimeLimitExceeded(Exception):
    """Raised inside a running task when its soft time limit is reached.

    It derives from ``Exception`` on purpose: a task may catch it to clean up
    before the hard limit arrives.
    """



class HardTimeLimit(BaseException):
    """Thrown into a green task at its hard time limit.

    A ``BaseException`` on purpose: the task must stop, and user code that
    catches ``Exception`` must not be able to carry on. The worker records the
    task as failed with :class:`TimeLimitExceeded`.
    """


class Terminated(BaseException):
    """Thrown into a running task revoked with ``terminate=True`` (thread and green pools).

    A ``BaseException`` for the same reason as :class:`HardTimeLimit`. The
    worker records the task as REVOKED and acks its message.
    """


class ExceptionInfo:
    """An exception with its formatted traceback, as task handlers and signals get it
    (Celery's ``einfo``): ``einfo.exception``, ``einfo.type``, ``einfo.traceback``."""

    def __init__(self, exception: BaseException, traceback: str | None = None) -> None:
        self.exception = exception
        self.type = type(exception)
        self.tb = exception.__traceback__
        if traceback is None:
            import traceback as tb_module

            traceback = "".join(tb_module.format_exception(self.type, exception, self.tb))
        self.traceback = traceback

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


#: Celery's names (``celery.exceptions``) for the same things.
CeleryError = CeleriacError
ImproperlyConfigured = ConfigurationError
InvalidTaskError = MessageDecodeError


#: Names of exceptions whose class ``AsyncResult.get()`` may re-create from a result.
REMOTE_SAFE_ERRORS: dict[str, type[BaseException]] = {
    "TimeLimitExceeded": TimeLimitExceeded,
    "SoftTimeLimitExceeded": SoftTimeLimitExceeded,
    "WorkerLostError": WorkerLostError,
    "NotRegistered": NotRegistered,
    "TaskRevokedError": TaskRevokedError,
    "MaxRetriesExceededError": MaxRetriesExceededError,
    "ChordError": ChordError,
    "Reject": Reject,
    "Ignore": Ignore,
}
