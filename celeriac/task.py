"""Tasks: a function registered with an app, plus how to send it.

``@app.task`` wraps a function in a :class:`Task`. Calling the task runs the
function here and now; ``delay()``/``apply_async()`` send a message for a worker,
``apply_many()`` sends many in a few broker calls and ``s()`` describes a call
for later (a :class:`celeriac.canvas.Signature`, e.g. for a ``group``).
Options are checked when the decorator runs, and send options when they are
given: a misspelt option is an error with a hint, not a silently ignored keyword.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from functools import cached_property
from types import MethodType
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypedDict, TypeVar

from celeriac.context import Request, current_request
from celeriac.exceptions import (
    ConfigurationError,
    ExceptionInfo,
    MaxRetriesExceededError,
    Retry,
    UnknownSettingError,
)
from celeriac.loader import importable_name
from celeriac.result import add_to_parent
from celeriac.send_options import checked_headers, refusal
from celeriac.settings import suggest
from celeriac.task_options import CLASS_OPTIONS, arguments_checker
from celeriac.task_options import TaskOptions as TaskOptions  # its home before task_options.py

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.app import Celeriac
    from celeriac.backends.base import ResultRecord
    from celeriac.canvas import Signature, chunks, xmap, xstarmap
    from celeriac.result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from typing import TypeAlias

    #: A ``link``/``link_error`` option: one signature or several, as objects or in the
    #: wire form they travel in (a dict: a retry sends them again so).
    Links: TypeAlias = (Signature[Any] | dict[str, Any]
                        | Sequence[Signature[Any] | dict[str, Any]] | None)


class SendOptions(TypedDict, total=False):
    """Every option ``apply_async`` accepts, and so a signature, a group and ``apply_many``.

    A TypedDict, so that options travel as keywords (``apply_async(countdown=5)``)
    while mypy still checks each name and type at the call site; callers without
    a type checker get :func:`check_send_options` at run time. Declared once here
    so every way of sending accepts exactly the same options.
    """

    #: The message's task id (generated when absent). Not allowed where one set of
    #: options is shared by many messages (groups, ``apply_many``).
    task_id: str | None
    #: Seconds from now before the task may run.
    countdown: float | None
    #: When the task may run: a datetime (naive means UTC) or a Unix time.
    eta: datetime | float | None
    #: Not run after this: seconds from now, or a datetime.
    expires: datetime | float | None
    queue: str | None
    #: 0-9; higher runs first.
    priority: int | None
    time_limit: float | None
    soft_time_limit: float | None
    serializer: str | None
    #: kombu's compression name (gzip, bzip2, lzma...) for the message body.
    compression: str | None
    ignore_result: bool | None
    retries: int
    #: Signatures sent when the task succeeds, its return value prepended to their
    #: arguments (unless immutable): the message's ``callbacks`` (docs/canvas.md).
    link: Links
    #: Signatures called when the task fails for good: the message's ``errbacks``.
    link_error: Links
    #: Custom message headers, seen by the task as ``self.request.headers`` and as
    #: request attributes; a protocol header is refused (docs/migrating.md "Send options").
    headers: dict[str, Any] | None
    #: The name logs and events show for this run (the ``shadow`` header).
    shadow: str | None
    #: The message's ``reply_to`` property (``self.request.reply_to``).
    reply_to: str | None
    #: Celery's routing: on the default exchange the routing key is the queue's name
    #: (used when ``queue`` is not given); any other exchange is refused.
    routing_key: str | None
    exchange: Any
    #: Celery's publish retry: accepted, not acted on (``broker_reconnect_timeout`` is).
    retry: bool | None
    retry_policy: dict[str, Any] | None
    #: False: a send from inside a task is not added to ``self.request.children``.
    add_to_parent: bool


class MessageOptions(SendOptions, total=False):
    """:class:`SendOptions` plus the lineage headers ``send_task`` can set: a retry keeps
    its original ones. Signatures do not take them: a message sent from inside a
    running task gets its parent and root from that task's request. ``chain``: the
    steps after this one, in Celery's wire form (the next step last); ``chord``,
    ``group_index``: a chord header member's body and position; ``chord_claim``: a
    chord body's claim (``docs/canvas-chords.md``)."""

    root_id: str | None
    parent_id: str | None
    group: str | None
    chain: list[dict[str, Any]] | None
    chord: dict[str, Any] | None
    group_index: int | None
    chord_claim: list[str] | None


SEND_OPTIONS = frozenset(SendOptions.__optional_keys__)
MESSAGE_OPTIONS = frozenset(MessageOptions.__optional_keys__)


def check_send_options(options: Mapping[str, Any], where: str = "apply_async", *,
                       allowed: frozenset[str] = SEND_OPTIONS, shared: bool = False) -> None:
    """Refuse an unknown option (with a hint) before anything is encoded or sent.

    ``shared``: the options apply to many messages at once, where a ``task_id``
    would give them all the same id (and each later message would overwrite the
    result of the one before).
    """
    for key in options:
        if key not in allowed:
            refused = refusal(key, where)
            if refused is not None:
                raise refused
            raise UnknownSettingError(f"unknown option {key!r} for {where}{suggest(key, sorted(allowed))}")
    if shared and options.get("task_id") is not None:
        raise ConfigurationError(f"{where}: task_id would give every message the same id; "
                                 "ids are generated per message")


def to_timestamp(value: datetime | float | None) -> float | None:
    """A datetime (naive means UTC) or a Unix time as a Unix time."""
    if value is None or isinstance(value, int | float):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


#: The handler methods a Task subclass may override (see :class:`Task`).
HANDLERS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


class Task(Generic[P, R]):
    """A registered task. Call it to run locally; ``delay()`` to run it on a worker.

    Subclass it to hang code on every run of a task, with Celery's handler
    methods, and pass the subclass as ``@app.task(base=MyTask)`` (or make it the
    app's default with ``Celeriac(task_cls=MyTask)``). They run in the worker
    process (and in eager runs), in the task's request context; one that raises
    is logged and changes nothing about the outcome.
    """

    def __init__(self, app: Celeriac, fn: Callable[..., R], options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.options = options = options.with_class_attributes(type(self))
        self.name = options.name or f"{importable_name(fn.__module__)}.{fn.__qualname__}"
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        # Unknown decorator keywords are the task's own attributes, as in Celery (a
        # function given as shadow_name is a method there: bound to the task here).
        for key, value in options.extra.items():
            setattr(self, key, MethodType(value, self) if key == "shadow_name" else value)
        # A base class's plain attribute (acks_late = False) hides the property that
        # resolves the option: the decorator's keyword must still win over it.
        for key in options.given & CLASS_OPTIONS:
            if any(key in vars(k) for k in type(self).__mro__[:type(self).__mro__.index(Task)]):
                setattr(self, key, getattr(options, key))
        #: True when this task names its runs (``shadow_name``): only then is it called.
        self.has_shadow_name = (type(self).shadow_name is not Task.shadow_name
                                or "shadow_name" in vars(self))
        #: True when this class overrides a handler (the worker skips them otherwise).
        self.has_handlers = any(getattr(type(self), h) is not getattr(Task, h) for h in HANDLERS)

    # -- handlers (Celery's names and arguments) -------------------------------------
    def before_start(self, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Just before the body runs."""

    def on_success(self, retval: Any, task_id: str, args: list[Any],
                   kwargs: dict[str, Any]) -> None:
        """The body returned ``retval``."""

    def on_failure(self, exc: BaseException, task_id: str, args: list[Any],
                   kwargs: dict[str, Any], einfo: ExceptionInfo) -> None:
        """The body raised ``exc`` and the task failed."""

    def on_retry(self, exc: BaseException, task_id: str, args: list[Any],
                 kwargs: dict[str, Any], einfo: ExceptionInfo) -> None:
        """The body asked to be retried (``self.retry()``, or autoretry); ``exc`` is why."""

    def after_return(self, status: str, retval: Any, task_id: str, args: list[Any],
                     kwargs: dict[str, Any], einfo: ExceptionInfo | None) -> None:
        """After the run, whatever its outcome: ``retval`` is the value or the exception."""

    def shadow_name(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
                    options: Mapping[str, Any]) -> str | None:
        """The name logs and events show for a run sent with these arguments and options,
        or None for the task's own (Celery's hook; ``@app.task(shadow_name=fn)`` too,
        ``fn(task, args, kwargs, options)``). ``apply_async(shadow=...)`` wins over it."""
        return None

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    # -- option resolution (task option first, then the app's setting) ---------------
    def _opt(self, option: str, setting: str) -> Any:
        value = getattr(self.options, option)
        return self.app.conf[setting] if value is None else value

    @property
    def acks_late(self) -> bool:
        return bool(self._opt("acks_late", "task_acks_late"))

    @property
    def reject_on_worker_lost(self) -> bool:
        return bool(self._opt("reject_on_worker_lost", "task_reject_on_worker_lost"))

    @property
    def ignore_result(self) -> bool:
        return bool(self._opt("ignore_result", "task_ignore_result"))

    @property
    def track_started(self) -> bool:
        return bool(self._opt("track_started", "task_track_started"))

    @property
    def time_limit(self) -> float | None:
        value: float | None = self._opt("time_limit", "task_time_limit")
        return value

    @property
    def soft_time_limit(self) -> float | None:
        value: float | None = self._opt("soft_time_limit", "task_soft_time_limit")
        return value

    @property
    def max_retries(self) -> int | None:
        """Retries ``self.retry()`` may make: None is unlimited when the task says
        ``max_retries=None`` (Celery's meaning); unset, ``task_default_max_retries`` (3)."""
        if self.options.max_retries is None and "max_retries" in self.options.given:
            return None
        value: int | None = self._opt("max_retries", "task_default_max_retries")
        return value

    @property
    def acks_on_failure_or_timeout(self) -> bool:
        return bool(self._opt("acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout"))

    @property
    def store_errors_even_if_ignored(self) -> bool:
        return bool(self._opt("store_errors_even_if_ignored", "task_store_errors_even_if_ignored"))

    @property
    def trail(self) -> bool:
        """Whether the tasks this one sends are recorded as its children (default True)."""
        return self.options.trail

    @property
    def rate_limit(self) -> str | float | None:
        """The task's own rate limit, else ``task_default_rate_limit`` (enforced across
        every worker of the broker: :mod:`celeriac.middleware.limits`)."""
        value: str | float | None = self._opt("rate_limit", "task_default_rate_limit")
        return value

    @property
    def concurrency_limit(self) -> int | None:
        """At most this many runs at once across every worker of the broker (None: no limit)."""
        return self.options.concurrency_limit

    @property
    def request(self) -> Request:
        """The message behind the current run (an empty request when called directly)."""
        return current_request.get() or Request(id="", task=self.name, called_directly=True)

    # -- running ----------------------------------------------------------------------
    @cached_property
    def is_async(self) -> bool:
        """True for an ``async def`` task (bound or not): calling it returns a coroutine,
        which a worker awaits on its process's event loop, on any pool (``docs/asyncio.md``)."""
        from celeriac.aio import is_async_task

        return is_async_task(self)

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # self is positional-only: a task may take a keyword argument named "self".
        if self.options.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    @cached_property
    def _arguments_checker(self) -> Callable[..., None] | None:
        return arguments_checker(self.fn, self.options.bind) if self.options.typing else None

    def check_arguments(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> None:
        """Raise TypeError now if the function cannot take these arguments (``typing``,
        on by default as in Celery): a wrong call fails where it is written, not later
        in a worker. ``typing=False`` turns it off; ``send_task`` never checks."""
        checker = self._arguments_checker
        if checker is None:
            return
        try:
            checker(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"{exc} (task {self.name}; arguments are checked before sending, "
                            "typing=False turns this off)") from None

    def delay(self, /, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; shorthand for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    async def adelay(self, /, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """:meth:`delay` for a coroutine: ``await add.adelay(2, 3)`` sends without blocking
        the event loop (``delay()`` works in a coroutine too, but blocks the loop for one
        publish round trip). A celeriac addition; see :meth:`aapply_async`."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args: tuple[Any, ...] | list[Any] | None = None,
                           kwargs: dict[str, Any] | None = None,
                           **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """:meth:`apply_async` for a coroutine, with the same options and errors: the send
        runs on the event loop's default executor (:mod:`celeriac.aio.client`) while
        the loop goes on. A cancelled ``aapply_async`` may still have sent its message."""
        from celeriac.aio.client import run_blocking

        return await run_blocking(self.apply_async, args, kwargs, **options)

    def apply_async(self, args: tuple[Any, ...] | list[Any] | None = None,
                    kwargs: dict[str, Any] | None = None,
                    **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """Send the task. ``countdown`` (seconds) or ``eta`` delay it; ``expires`` is
        seconds from now or a datetime after which it is not run; ``queue``,
        ``priority``, ``time_limit``, ``soft_time_limit``, ``serializer``,
        ``compression`` and ``ignore_result`` override the task's options for this call;
        ``headers``, ``shadow``, ``routing_key``... as in Celery (see :class:`SendOptions`
        and :mod:`celeriac.send_options`). An unknown option raises :class:`UnknownSettingError`."""
        check_send_options(options)
        self.check_arguments(args, kwargs)
        if self.app.conf["task_always_eager"]:
            sent_args, sent_kwargs = self._as_sent(args, kwargs, options.get("serializer"),
                                                   options.get("compression"))
            result = self.apply(sent_args, sent_kwargs, **options)
            if options.get("add_to_parent", True):
                add_to_parent(result)
            return result
        if self.has_shadow_name and not options.get("shadow"):
            options["shadow"] = self.shadow_name(args, kwargs, options)
        return self.app.send_task(self.name, args, kwargs, **self.resolve_options(options))

    def _as_sent(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
                 serializer: str | None, compression: str | None = None
                 ) -> tuple[list[Any], dict[str, Any]]:
        """The arguments as a worker would receive them: through the serializer and back.

        ``task_always_eager`` runs the task here, but the test should still fail where
        production would: an argument the serializer refuses raises
        :class:`SerializationError` (as Celery's eager mode does), and the task sees a
        tuple as the list JSON makes of it.
        """
        from celeriac.message import CONTENT_TYPES, build, decode

        serializer = serializer or self.options.serializer or self.app.conf.task_serializer
        if serializer not in self.app.conf.accept_content:
            raise ConfigurationError(
                f"serializer {serializer!r} is not in accept_content {self.app.conf.accept_content}; "
                "workers would refuse the message")
        compression = (compression or self.options.compression
                       or self.app.conf["task_compression"])
        envelope = build(self.name, "eager", list(args or ()), dict(kwargs or {}), queue="",
                         serializer=serializer, compression=compression)
        message = decode(envelope.dumps(), {CONTENT_TYPES[serializer]})
        return message.args, message.kwargs

    def resolve_options(self, options: SendOptions) -> SendOptions:
        """The options a message of this task goes out with: each option given for the
        call, else the task's own (``@app.task(priority=...)``), else the app's setting.
        Shared by single and bulk sends so they cannot disagree."""
        resolved: SendOptions = {**options}
        if options.get("expires") is None:
            resolved["expires"] = self.options.expires
        if options.get("priority") is None:
            resolved["priority"] = self.options.priority
        if options.get("time_limit") is None:
            resolved["time_limit"] = self.time_limit
        if options.get("soft_time_limit") is None:
            resolved["soft_time_limit"] = self.soft_time_limit
        if not options.get("serializer"):
            resolved["serializer"] = self.options.serializer
        if options.get("compression") is None:
            resolved["compression"] = self.options.compression
        if options.get("ignore_result") is None:
            resolved["ignore_result"] = self.ignore_result
        return resolved

    # -- describing calls and sending many ----------------------------------------------
    def s(self, /, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """This call, described but not sent: ``add.s(2, 3)``. Add send options with
        ``.set(countdown=5)``; send it with ``.delay()`` or as part of a ``group``."""
        from celeriac.canvas import Signature

        return Signature(self, args, kwargs)

    def si(self, /, *args: P.args, **kwargs: P.kwargs) -> Signature[R]:
        """An immutable :meth:`s`: in a chain or as a callback, the previous task's result
        is not added to its arguments (Celery's ``si``)."""
        from celeriac.canvas import Signature

        return Signature(self, args, kwargs, immutable=True)

    def map(self, it: Iterable[Any]) -> xmap:
        """One task that calls this one's function for each item, in order, in one worker
        (Celery's ``xmap``: not parallel; see :meth:`chunks`)."""
        from celeriac.canvas import xmap

        return xmap(self.s(), it)  # type: ignore[call-arg]

    def starmap(self, it: Iterable[Sequence[Any]]) -> xstarmap:
        """:meth:`map` with each item spread as the positional arguments (``xstarmap``)."""
        from celeriac.canvas import xstarmap

        return xstarmap(self.s(), it)  # type: ignore[call-arg]

    def chunks(self, it: Iterable[Sequence[Any]], n: int) -> chunks:
        """The items (argument tuples) in parts of ``n``, one :meth:`starmap` task per part,
        sent together as a group: ``add.chunks(zip(xs, ys), 100).delay()``."""
        from celeriac.canvas import chunks

        return chunks(self.s(), it, n)  # type: ignore[call-arg]

    def signature(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                  **options: Unpack[SendOptions]) -> Signature[R]:
        """Celery's spelling of ``s()`` with options: ``add.signature((2, 3), countdown=5)``."""
        from celeriac.canvas import Signature

        return Signature(self, args, kwargs, options)

    def apply_many(self, args: Iterable[tuple[Any, ...] | list[Any]], *, chunk_size: int = 1000,
                   **options: Unpack[SendOptions]) -> list[AsyncResult[R]]:
        """Send one task per item of ``args`` (each item: that call's positional
        arguments, ``add.apply_many((i, i) for i in range(10_000))``), with the same
        ``options`` for all; return their results in order.

        Much cheaper than a loop of ``delay()``: one broker call per ``chunk_size``
        messages. Every message is encoded before the first is published, so an
        unserialisable argument anywhere raises and publishes nothing (see
        :meth:`celeriac.app.Celeriac.send_many`, which also covers keyword
        arguments: ``app.send_many(fetch.s(url, timeout=5) for url in urls)``).
        """
        check_send_options(options, "apply_many", shared=True)
        if self.app.conf["task_always_eager"]:
            # As when sending: every call is encoded before the first one runs.
            serializer, compression = options.get("serializer"), options.get("compression")
            items = list(_checked_items(args))
            for item in items:
                self.check_arguments(item, None)
            eager = [self._as_sent(item, None, serializer, compression) for item in items]
            results = [self.apply(call_args, call_kwargs, **options) for call_args, call_kwargs in eager]
            for result in results if options.get("add_to_parent", True) else ():
                add_to_parent(result)
            return list(results)  # list[EagerResult] is not a list[AsyncResult] to mypy
        from celeriac.canvas import Signature

        calls = (Signature(self, item, None, options) for item in _checked_items(args))
        return self.app.send_many(calls, chunk_size=chunk_size)

    def apply(self, args: tuple[Any, ...] | list[Any] | None = None,
              kwargs: dict[str, Any] | None = None, *, throw: bool | None = None,
              **options: Unpack[SendOptions]) -> EagerResult[R]:
        """Run the task here and now, as a worker would, and return its result.

        A retry runs again at once (``options["retries"]`` is the count to start
        from), until the task returns or fails. ``throw`` (default: the
        ``task_eager_propagates`` setting) re-raises the exception of a task that
        failed, the original object with its traceback, instead of returning a
        FAILURE result. With ``task_store_eager_result`` every outcome is also
        stored in the result backend (``store_eager_result`` per task), unless the task
        or call ignores results (then failures only with ``store_errors_even_if_ignored``). The
        other send options (queue, countdown, limits...) describe a message and
        change nothing here, as in Celery.
        """
        from celeriac.worker.run import run_eagerly

        check_send_options(options, "apply")
        conf = self.app.conf
        ignore = self.ignore_result if options.get("ignore_result") is None else options["ignore_result"]
        store = (conf.task_store_eager_result if self.options.store_eager_result is None
                 else self.options.store_eager_result)
        return run_eagerly(
            self, list(args or ()), dict(kwargs or {}), options.get("task_id") or str(uuid.uuid4()),
            retries=options.get("retries", 0),
            throw=conf.task_eager_propagates if throw is None else throw,
            store=store and not ignore,
            store_errors=bool(store and ignore and self.store_errors_even_if_ignored),
            priority=options.get("priority"), link=options.get("link"),
            link_error=options.get("link_error"),
            headers=checked_headers(options["headers"]) if options.get("headers") else None)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Store a state of the task's own choosing, with ``meta``, as Celery's does:
        ``self.update_state(state="PROGRESS", meta={"done": 3, "total": 10})``.

        ``AsyncResult.state`` then returns it and ``.info`` the meta, until the task
        ends; a state that is not SUCCESS, FAILURE or REVOKED does not end a ``get()``.
        ``task_id`` defaults to the running task's (eagerly too: the state is then
        written to the result backend, as Celery's eager mode does). ``meta`` must be
        JSON (with celeriac's markers), ``state`` a string. FAILURE, RETRY or REVOKED
        with an exception as ``meta`` stores that exception. Celery's extra keywords
        go to its backend's ``store_result`` and have no counterpart: they are refused.
        """
        if kwargs:
            raise TypeError(f"update_state() got unexpected keyword arguments {sorted(kwargs)}")
        request = self.request
        task_id = task_id or request.id
        if not task_id:
            raise ConfigurationError(f"{self.name}.update_state() needs task_id= outside a "
                                     "running task")
        if not isinstance(state, str) or not state:
            raise ConfigurationError(f"update_state(state={state!r}): a state name is a "
                                     "non-empty string")
        self.app.backend.store(self._state_record(task_id, state, meta, request))

    def _state_record(self, task_id: str, state: str, meta: Any, request: Request) -> ResultRecord:
        from celeriac.backends.base import ResultRecord
        from celeriac.states import EXCEPTION_STATES, READY_STATES
        from celeriac.worker.run import describe_request, failure_record

        if state in EXCEPTION_STATES and isinstance(meta, BaseException):
            record = failure_record(task_id, self.name, meta, request.retries, status=state)
        else:
            record = ResultRecord(task_id=task_id, status=state, result=meta, name=self.name,
                                  retries=request.retries,
                                  date_done=time.time() if state in READY_STATES else None)
        if task_id == request.id:
            describe_request(record, request, self.app.conf.result_extended)
        return record

    def retry(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        max_retries: int | None = None,
        throw: bool = True,
    ) -> Retry:
        """Send this task again and stop the current run.

        Call it inside a running task (``raise self.retry(exc=exc)`` reads well).
        When the retries are used up, ``exc`` (or :class:`MaxRetriesExceededError`)
        is raised instead and the task fails.
        """
        request = current_request.get()
        if request is None or not request.id:
            raise ConfigurationError(f"{self.name}.retry() called outside a running task")
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            # Not a Retry: the run must fail (a Retry would be recorded as RETRY with no
            # new message behind it, and an eager run would retry it forever).
            raise MaxRetriesExceededError(
                f"max retries ({limit}) exceeded for {self.name}[{request.id}]")
        when = self._retry_delay(request.retries, countdown, eta)
        if not request.is_eager:
            options = request.execution_options()
            options["task_id"] = request.id
            options["countdown"] = when
            options["retries"] = request.retries + 1
            self.app.send_task(self.name, request.args if args is None else args,
                               request.kwargs if kwargs is None else kwargs, **options)
        signal = Retry(exc=exc, when=when)
        if throw:
            raise signal
        return signal

    def replace(self, sig: Any) -> Any:
        """Hand this run's place to ``sig`` (a task signature, chain or group), as Celery's
        ``Task.replace``: it runs under this task's id, inherits its callbacks, errbacks,
        the rest of its chain and its chord membership, and this run ends as ``Ignore``
        (nothing stored, message acked). Eagerly, the replacement runs here and its value
        is returned: write ``return self.replace(sig)``. Only a bound task, while it runs
        (:mod:`celeriac.canvas.replace`)."""
        from celeriac.canvas.replace import replace

        return replace(self, sig)

    def _retry_delay(self, retries: int, countdown: float | None,
                     eta: datetime | float | None) -> float:
        if eta is not None:
            return max(0.0, (to_timestamp(eta) or 0.0) - datetime.now(timezone.utc).timestamp())
        if countdown is not None:
            return countdown
        # retry_backoff is not applied here: as in Celery, it shapes automatic retries only
        # (the autoretry middleware passes the backoff as countdown).
        value = self.options.default_retry_delay
        return float(self.app.conf["task_default_retry_delay"] if value is None else value)


def _checked_items(items: Iterable[Any]) -> Iterator[tuple[Any, ...] | list[Any]]:
    """The items of ``apply_many``, refusing a bare value: ``apply_many([1, 2])`` would
    otherwise fail obscurely, or worse, send ``"ab"`` as two arguments ``"a", "b"``."""
    for index, item in enumerate(items):
        if not isinstance(item, tuple | list):
            raise TypeError(f"apply_many: item {index} is {type(item).__name__} {item!r:.80}; each item "
                            "is one call's positional arguments, a tuple or list: apply_many([(1,), (2,)])")
        yield item
