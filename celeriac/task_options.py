"""Task options: what ``@app.task(...)`` and a ``base=`` class accept, and what they mean.

Every option Celery documents for its ``Task`` class is either one of
:class:`TaskOptions`' fields (with Celery's meaning), or refused with an error
that names it as a Celery option celeriac does not support and why
(:data:`UNSUPPORTED`). Celery turns any other decorator keyword into an attribute
of the task; celeriac does too, except for a name close to a known option, which
is far more likely a misspelling than a new attribute: that one is an error with
a hint, so ``max_retires=5`` cannot silently mean nothing.

The same names set as class attributes of a ``base=`` class (``class
MyTask(Task): autoretry_for = (IOError,)``) are read as options too, as in Celery;
the decorator's keywords win over them and both win over the app's settings.
"""

from __future__ import annotations

import difflib
import inspect
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from celeriac import compression
from celeriac.exceptions import ConfigurationError, UnknownSettingError

if TYPE_CHECKING:
    from celeriac.task import Task

#: Celery task options celeriac does not have, with what to do instead. They are
#: refused rather than ignored: an app that relies on one would otherwise run
#: with a different meaning and nothing to say so.
UNSUPPORTED: dict[str, str] = {
    "routing_key": "AMQP routing; celeriac routes by queue name (use queue=)",
    "exchange": "AMQP routing; celeriac routes by queue name (use queue=)",
    "exchange_type": "AMQP routing; celeriac routes by queue name (use queue=)",
    "delivery_mode": "AMQP persistence; celeriac's brokers always persist messages",
    "immediate": "a deprecated AMQP flag",
    "mandatory": "a deprecated AMQP flag",
    "backend": "one result backend per app in celeriac (the result_backend setting)",
    "send_events": "task events are per worker in celeriac (celeriac worker -E)",
    "autoregister": "every task is registered in celeriac",
    "resultrepr_maxsize": "celeriac's worker logs do not include results",
    "lazy": "celeriac creates every task when it is declared",
    "abstract": "Celery 3's abstract tasks; pass the class as base= instead",
    "Request": "custom worker request classes",
    "Strategy": "custom worker strategies",
    "pydantic": "pydantic argument validation",
    "pydantic_strict": "pydantic argument validation",
    "pydantic_context": "pydantic argument validation",
    "pydantic_dump_kwargs": "pydantic argument validation",
    "acks_on_failure": "Celery 5.7's half of acks_on_failure_or_timeout; set "
                       "acks_on_failure_or_timeout, which covers both",
    "acks_on_timeout": "Celery 5.7's half of acks_on_failure_or_timeout; set "
                       "acks_on_failure_or_timeout, which covers both",
    "retry_on_worker_lost": "the messages of a worker process that dies always go back to "
                            "the queue in celeriac, up to broker_max_deliveries",
    "shared": "an @app.task task stays on its app in celeriac (Celery's shared=False); "
              "declare a task for every app with @shared_task",
    "filter": "a function applied to the new task; apply it to what @app.task returns",
}

#: How close an unknown keyword must be to a known option to be taken for a
#: misspelling of it (difflib's ratio; "max_retires" vs "max_retries" is 0.91).
MISSPELLING_CUTOFF = 0.8

_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:/\s*([smh]))?\s*$")
_PER_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate_limit(value: Any) -> float | None:
    """Celery's rate limit (``"10/s"``, ``"100/m"``, ``"1000/h"``, or a number of tasks
    per second) as tasks per second; None or 0 means no limit. Refuses anything else,
    so a typo in a limit is found when the task is declared."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"rate_limit={value!r}: expected e.g. '10/s', '100/m', '1000/h' "
                                 "or a number of tasks per second")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigurationError(f"rate_limit={value!r}: must be >= 0")
        return float(value) or None
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigurationError(f"rate_limit={value!r}: expected e.g. '10/s', '100/m', '1000/h' "
                                 "or a number of tasks per second")
    per_second = float(match.group(1)) / _PER_SECONDS[match.group(2) or "s"]
    return per_second or None


def _exception_types(name: str, value: Any) -> tuple[type[BaseException], ...]:
    """A list or tuple of exception classes (Celery accepts both) as a tuple."""
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in value):
        raise ConfigurationError(f"task option {name} must be a tuple or list of exception "
                                 f"types, got {value!r}")
    return value


@dataclass(frozen=True)
class TaskOptions:
    """Every option ``@app.task(...)`` accepts. None means "use the app's setting"."""

    name: str | None = None
    bind: bool = False
    queue: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    default_retry_delay: float | None = None
    acks_late: bool | None = None
    #: Past its hard time limit, back to the queue instead of failing (Celery's name).
    reject_on_worker_lost: bool | None = None
    #: With acks_late: False dead-letters the message of a task that failed or timed
    #: out instead of acking it (Celery rejects it without requeue).
    acks_on_failure_or_timeout: bool | None = None
    ignore_result: bool | None = None
    #: With ignore_result: failures, retries and revocations are still stored.
    store_errors_even_if_ignored: bool | None = None
    #: Store eager results for this task (``task_store_eager_result`` per task).
    store_eager_result: bool | None = None
    track_started: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | None = None
    serializer: str | None = None
    #: kombu's compression of the message body (gzip, bzip2, lzma...); None: task_compression.
    compression: str | None = None
    #: Runs per second, minute or hour (``"10/s"``), across every worker of the broker.
    rate_limit: str | float | None = None
    #: At most this many runs at once across every worker of the broker (celeriac's own).
    concurrency_limit: int | None = None
    #: Check the arguments of delay()/apply_async() against the function's signature.
    typing: bool = True
    #: Expected exceptions: the task fails, and the worker logs it at INFO without a traceback.
    throws: tuple[type[BaseException], ...] = ()
    #: The kind of pool this task needs (``"prefork"`` for CPU-bound or not
    #: green-safe code, ``"gevent"`` for code that relies on patching): routes it
    #: to ``<task_default_queue>.<pool>``, which every worker group of that pool serves.
    pool: str | None = None
    #: Exception types that trigger an automatic retry (a tuple or a list).
    autoretry_for: tuple[type[BaseException], ...] = ()
    #: Exception types never retried automatically, even as subclasses of autoretry_for.
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    #: Keywords for the retry() an automatic retry makes (max_retries, countdown...).
    retry_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: Exponential backoff for automatic retries: True (base 1 s) or the base in seconds.
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    #: Record the results of the tasks this one sends as its children (stored with its
    #: result: ``AsyncResult.children``), as Celery's ``trail``.
    trail: bool = True
    #: The Task subclass to build the task from (its handlers: on_success, on_failure...).
    base: type[Task[Any, Any]] | None = None
    #: Custom attributes (unknown keywords, as Celery sets them on the task).
    extra: dict[str, Any] = field(default_factory=dict)
    #: The names given explicitly, by the decorator or a base class's attribute (the
    #: decorator's win over the attributes; ``max_retries=None`` given means unlimited).
    given: frozenset[str] = frozenset()

    @classmethod
    def check(cls, options: dict[str, Any]) -> TaskOptions:
        """Validate the decorator's keywords; unknown ones become ``extra`` attributes."""
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in options.items():
            if key in OPTION_NAMES:
                known[key] = value
            else:
                _check_custom(key)
                extra[key] = value
        return cls(**known, extra=extra, given=frozenset(known)).validated()

    def validated(self) -> TaskOptions:
        """These options, normalised (lists of exceptions as tuples), or a clear error."""
        from celeriac.task import Task

        if self.priority is not None and not 0 <= self.priority <= 9:
            raise ConfigurationError(f"task option priority={self.priority!r}: must be 0-9")
        for limit in ("time_limit", "soft_time_limit"):
            value = getattr(self, limit)
            if value is not None and value <= 0:
                raise ConfigurationError(f"task option {limit}={value!r}: must be > 0")
        if self.pool is not None:
            from celeriac.pools import POOLS
            from celeriac.settings import suggest

            if self.pool not in POOLS:
                raise ConfigurationError(f"task option pool={self.pool!r}: choose from "
                                         f"{', '.join(POOLS)}{suggest(self.pool, POOLS)}")
        if self.base is not None and not (isinstance(self.base, type) and issubclass(self.base, Task)):
            raise ConfigurationError(f"task option base={self.base!r}: must be a subclass of "
                                     "celeriac.Task")
        if not isinstance(self.retry_kwargs, Mapping):
            raise ConfigurationError(f"task option retry_kwargs must be a dict, got {self.retry_kwargs!r}")
        bad = set(self.retry_kwargs) - RETRY_KWARGS
        if bad:
            raise ConfigurationError(f"task option retry_kwargs: {', '.join(sorted(bad))} is not an "
                                     f"argument of retry(); use {', '.join(sorted(RETRY_KWARGS))}")
        parse_rate_limit(self.rate_limit)
        slots = self.concurrency_limit
        if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int)
                                  or slots < 1):
            raise ConfigurationError(f"task option concurrency_limit={slots!r}: must be a whole "
                                     "number >= 1 (or None: no limit)")
        if self.compression is not None:
            try:
                compression.get(self.compression)
            except ConfigurationError as exc:
                raise ConfigurationError(f"task option compression: {exc}") from None
        return replace(self, throws=_exception_types("throws", self.throws),
                       autoretry_for=_exception_types("autoretry_for", self.autoretry_for),
                       dont_autoretry_for=_exception_types("dont_autoretry_for",
                                                           self.dont_autoretry_for))

    def with_class_attributes(self, cls: type[Task[Any, Any]]) -> TaskOptions:
        """These options under the attributes of ``cls`` and its bases below Task: an
        option set on a base class applies unless the decorator gave it too."""
        from celeriac.task import Task

        inherited: dict[str, Any] = {}
        for klass in reversed(cls.__mro__[:cls.__mro__.index(Task)]):
            for key, value in vars(klass).items():
                if key in UNSUPPORTED:
                    raise ConfigurationError(_unsupported(key, f"{klass.__name__}.{key}"))
                if key in CLASS_OPTIONS and not _is_code(value):
                    inherited[key] = value
        taken = {k: v for k, v in inherited.items() if k not in self.given}
        return (replace(self, **taken, given=self.given | frozenset(taken)).validated()
                if taken else self)


def backoff_countdown(options: TaskOptions, retries: int) -> float:
    """Seconds before automatic retry number ``retries + 1`` with ``retry_backoff``
    (Celery's rule): the base (True is 1 s) doubled per retry already made, at most
    ``retry_backoff_max``, and with ``retry_jitter`` a uniformly random part of that,
    so that tasks failing together do not all come back at the same instant."""
    base = 1.0 if options.retry_backoff is True else float(options.retry_backoff)
    delay = min(base * (2 ** retries), options.retry_backoff_max)
    return random.uniform(0, delay) if options.retry_jitter else delay


def _is_code(value: Any) -> bool:
    """A property or method of the class (not a plain value to read as an option)."""
    return isinstance(value, property | staticmethod | classmethod) or inspect.isfunction(value)


#: Every option's name.
OPTION_NAMES = frozenset(f.name for f in fields(TaskOptions)) - {"extra", "given"}
#: The options a base class may set as attributes (not which class, function or name).
CLASS_OPTIONS = OPTION_NAMES - {"name", "bind", "base"}
#: The keywords retry() takes, for retry_kwargs.
RETRY_KWARGS = frozenset({"args", "kwargs", "countdown", "eta", "max_retries", "throw"})


def _unsupported(key: str, where: str) -> str:
    return (f"{where} is a Celery task option celeriac does not support: {UNSUPPORTED[key]} "
            "(see docs/migrating.md)")


def _check_custom(key: str) -> None:
    """Allow ``key`` as a custom attribute, unless it is an unsupported Celery option, a
    likely misspelling of an option, or would hide one of the Task's own attributes."""
    from celeriac.task import Task

    if key in UNSUPPORTED:
        raise ConfigurationError(_unsupported(key, f"task option {key!r}"))
    close = difflib.get_close_matches(key, sorted(OPTION_NAMES | set(UNSUPPORTED)), n=1,
                                      cutoff=MISSPELLING_CUTOFF)
    if close:
        raise UnknownSettingError(f"unknown task option {key!r} (did you mean {close[0]!r}?); "
                                  "other unknown names become attributes of the task")
    if key == "shadow_name":  # Celery's documented way to set the hook without a subclass
        return
    if not key.isidentifier() or hasattr(Task, key) or key in {"app", "fn", "options", "name"}:
        raise ConfigurationError(f"task option {key!r}: not an option, and as a custom "
                                 "attribute it would hide the task's own attribute of that name")


def arguments_checker(fn: Callable[..., Any], bind: bool) -> Callable[..., None] | None:
    """A function that takes exactly the arguments ``fn`` takes and does nothing, so a
    call with wrong arguments raises TypeError with Python's own message. None when
    ``fn``'s parameters cannot be read (a builtin): then nothing is checked.

    Built once per task: calling it costs about what calling an empty function does,
    a fraction of ``inspect.Signature.bind`` (measured in the commit that added it).
    ``bind=True`` drops the first parameter, the task itself.
    """
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if bind:
        if not parameters or parameters[0].kind not in (
                inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            return None
        parameters = parameters[1:]
    source: list[str] = []
    star = False
    for index, param in enumerate(parameters):
        kind = param.kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            source.append(f"*{param.name}")
            star = True
        elif kind is inspect.Parameter.VAR_KEYWORD:
            source.append(f"**{param.name}")
        else:
            if kind is inspect.Parameter.KEYWORD_ONLY and not star:
                source.append("*")
                star = True
            source.append(param.name if param.default is param.empty else f"{param.name}=None")
        if kind is inspect.Parameter.POSITIONAL_ONLY and (
                index + 1 == len(parameters)
                or parameters[index + 1].kind is not inspect.Parameter.POSITIONAL_ONLY):
            source.append("/")
    name = fn.__name__ if getattr(fn, "__name__", "").isidentifier() else "task"
    namespace: dict[str, Any] = {}
    # Only identifiers read from a real signature go into this source: no data is executed.
    exec(f"def {name}({', '.join(source)}):\n    pass\n", namespace)
    checker: Callable[..., None] = namespace[name]
    return checker
