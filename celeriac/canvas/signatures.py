"""A :class:`Signature`: one task call described now and sent later, and its wire form.

A signature is a task, its arguments and its send options: ``add.s(2, 3)``. It
travels inside other messages (a chain's next step, a callback, an errback) in
Celery's dict form, ``{"task", "args", "kwargs", "options", "subtask_type",
"immutable"}``: :meth:`Signature.to_dict` writes it and :func:`signature` /
:meth:`Signature.from_dict` rebuild any canvas from it, so signatures written by
Celery's client run here and ours run on Celery's workers.
"""

from __future__ import annotations

import logging
import reprlib
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac.context import custom_headers
from celeriac.exceptions import ConfigurationError
from celeriac.result import AsyncResult
from celeriac.task import SEND_OPTIONS, check_send_options

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.app import Celeriac
    from celeriac.canvas.chains import chain
    from celeriac.canvas.groups import group
    from celeriac.result import EagerResult
    from celeriac.task import Links, MessageOptions, SendOptions, Task

R = TypeVar("R")
#: A signature or group (what ``link``/``link_error`` take, returned as given).
S = TypeVar("S")

log = logging.getLogger("celeriac.canvas")

#: Short reprs of arguments: a signature's repr goes into error messages.
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60

#: Options Celery's client writes into a signature that describe its own bookkeeping
#: (lineage, routing by exchange, stamping): a rebuilt signature drops them, as the
#: message it is sent in gets its lineage from the task that sends it.
CELERY_BOOKKEEPING = frozenset({
    "reply_to", "root_id", "parent_id", "group_id", "group_index", "route_name", "exchange",
    "routing_key", "stamped_headers", "stamps", "headers", "producer", "connection",
    "publisher", "add_to_parent", "shadow", "chain",
    # A chord header's chain marks its last task with these; the worker reads them from
    # the step's dict (celeriac.middleware.followups.chord_marks), not from a signature.
    "chord",
})

#: Bookkeeping Celery shares with celeriac's own options, kept from a signature's dict:
#: its custom headers (protocol ones, e.g. Celery's stamping lists, dropped) and shadow.
WIRE_KEPT = frozenset({"headers", "shadow"})


class Signature(Generic[R]):
    """One task call, described but not sent: task, arguments and send options.

    Usually made by ``task.s(*args, **kwargs)`` (typed against the task's
    parameters), ``task.si(...)`` (immutable: a chain or callback does not add the
    previous result to its arguments) or ``task.signature(args, kwargs, **options)``;
    ``app.signature(name, ...)`` names a task this process need not import. Options are
    those of ``apply_async`` (``link`` and ``link_error`` included) and are checked when
    given, so a misspelt one fails where it is written. Sending applies the task's own
    options under the signature's, exactly as ``apply_async`` does.
    """

    #: Celery's ``subtask_type``: None for one task; the canvas classes set theirs.
    subtask_type: str | None = None

    def __init__(self, task: Task[Any, R] | str, args: Sequence[Any] | None = None,
                 kwargs: Mapping[str, Any] | None = None, options: SendOptions | None = None,
                 *, app: Celeriac | None = None, immutable: bool = False) -> None:
        if isinstance(task, str):
            if app is None:
                raise ConfigurationError(f"Signature({task!r}) needs app=..., or use app.signature()")
            self.app, self.name, self.task = app, task, None
        else:
            self.app, self.name, self.task = task.app, task.name, task
        if args is not None and not isinstance(args, tuple | list):
            raise TypeError(f"args of {self.name} must be a tuple or list, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs of {self.name} must be a mapping, got {type(kwargs).__name__}")
        self.args: tuple[Any, ...] = tuple(args or ())
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.options: SendOptions = {}
        #: True: arguments given when it is sent (a previous result) are not added.
        self.immutable = immutable
        if options:
            self.set(**options)

    def __repr__(self) -> str:
        params = [*map(_repr.repr, self.args), *(f"{k}={_repr.repr(v)}" for k, v in self.kwargs.items())]
        text = f"{self.name}({', '.join(params)})"
        if self.options:
            text += f".set({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"
        return text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and other.to_dict() == self.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, as Celery's (a dict)

    # -- options and links ----------------------------------------------------------------
    def set(self, immutable: bool | None = None, **options: Unpack[SendOptions]) -> Signature[R]:
        """Add or replace send options in place and return this signature (as Celery does,
        so ``sig.set(queue="io")`` without re-assigning still takes effect);
        ``immutable=True`` makes it ignore arguments given when sent (``si()``)."""
        check_send_options(options, "Signature.set")
        if immutable is not None:
            self.immutable = bool(immutable)
        for key in ("link", "link_error"):
            if key in options:
                options[key] = links(options[key], self.app)
        self.options.update(options)
        return self

    @property
    def id(self) -> str | None:
        """The task id it will be sent with, once :meth:`freeze` gave it one."""
        return self.options.get("task_id")

    def freeze(self, _id: str | None = None) -> AsyncResult[R]:
        """Fix its task id now (kept if it has one) and return the result it will have."""
        task_id = self.options.get("task_id") or _id or str(uuid.uuid4())
        self.options["task_id"] = task_id
        return AsyncResult(task_id, self.app, self.name)

    def link(self, callback: S) -> S:
        """Send ``callback`` with this task's result when it succeeds; returns ``callback``."""
        self.options["link"] = [*links(self.options.get("link"), self.app), callback]  # type: ignore[list-item]
        return callback

    def link_error(self, errback: S) -> S:
        """Call ``errback`` when this task fails; returns ``errback`` (Celery's order)."""
        self.options["link_error"] = [*links(self.options.get("link_error"), self.app), errback]  # type: ignore[list-item]
        return errback

    def on_error(self, errback: Signature[Any] | group[Any]) -> Signature[R]:
        """:meth:`link_error` returning this signature, to chain calls:
        ``add.s(2, 2).on_error(log_error.s()).delay()``."""
        self.link_error(errback)
        return self

    def __or__(self, other: Signature[Any] | chain[Any] | group[Any]) -> chain[Any]:
        """``a | b``: a chain, ``b`` called with ``a``'s result."""
        from celeriac.canvas.chains import chain
        from celeriac.canvas.groups import group

        if isinstance(other, Signature | group):
            return chain(self, other)  # a group is refused there, saying why
        return NotImplemented

    # -- copies and merging ---------------------------------------------------------------
    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Unpack[SendOptions]) -> Signature[R]:
        """A copy, with more arguments and options (Celery's ``clone``/``partial``)."""
        return self.merged(args, kwargs, options)

    def merged(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
               options: SendOptions | None = None) -> Signature[R]:
        """A new signature with more arguments and options, this one unchanged.

        As in Celery, extra positional arguments go *before* the signature's own
        (``add.s(2).delay(1)`` calls ``add(1, 2)``), and the new keyword arguments and
        options win over the signature's. An immutable signature keeps its arguments.
        """
        check_send_options(options or {})
        task: Task[Any, R] | str = self.name if self.task is None else self.task
        if self.immutable:
            args, kwargs = None, None
        combined = Signature(task, (*(args or ()), *self.args), {**self.kwargs, **(kwargs or {})},
                             app=self.app, immutable=self.immutable)
        combined.options = {**self.options}
        if options:
            combined.set(**options)
        return combined

    # -- the wire form --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Celery's dict form: what travels in a message's ``callbacks``, ``errbacks`` and
        ``chain`` (and what ``json.dumps`` of a Celery signature gives)."""
        options: dict[str, Any] = dict(self.options)
        for key in ("link", "link_error"):
            if key in options:
                options[key] = wire_links(options[key])
        return {"task": self.name, "args": list(self.args), "kwargs": dict(self.kwargs),
                "options": options, "subtask_type": self.subtask_type,
                "immutable": self.immutable}

    def __json__(self) -> dict[str, Any]:
        """A signature passed as a task argument travels as its dict (as in Celery)."""
        return self.to_dict()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celeriac | None = None) -> Signature[Any]:
        """Rebuild a signature (a chain, a group, a map...) from its dict form: what
        ``signature(d)`` does. Celery's bookkeeping options are dropped (see
        :data:`CELERY_BOOKKEEPING`); a chord is refused with a clear error."""
        rebuilt: Signature[Any] = from_dict(d, app)
        return rebuilt

    # -- sending and running ---------------------------------------------------------------
    def resolved_options(self) -> SendOptions:
        """The options its message goes out with: the signature's over the task's own,
        if the task is registered in this app (it may be known only by name).

        Called once per message as it is sent (``group``, ``send_many``), so it also checks
        the arguments against the task's function (``typing``), as ``apply_async`` does: a
        signature may be partial until then."""
        task = self.task if self.task is not None else self.app.tasks.get(self.name)
        if task is None:
            return self.options
        task.check_arguments(self.args, self.kwargs)
        return task.resolve_options(self.options)

    def send(self, **extra: Unpack[MessageOptions]) -> AsyncResult[R]:
        """Send it as it is, always as a message (never eagerly), with message options
        a signature cannot hold (``chain``: the steps after it, lineage)."""
        options: MessageOptions = {**self.resolved_options(), **extra}
        result: AsyncResult[R] = self.app.send_task(self.name, self.args, self.kwargs, **options)
        return result

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """Send it, with extra arguments (see :meth:`merged`) and options over its own."""
        call = self.merged(args, kwargs, options)
        task = call.task if call.task is not None else call.app.tasks.get(call.name)
        if task is not None:  # goes through apply_async: task_always_eager applies
            result: AsyncResult[R] = task.apply_async(list(call.args), call.kwargs, **call.options)
            return result
        return call.app.send_task(call.name, call.args, call.kwargs, **call.options)

    def delay(self, /, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        """Send it; ``args``/``kwargs`` are extra arguments, as for :meth:`apply_async`."""
        return self.apply_async(args, kwargs)

    async def aapply_async(self, args: Sequence[Any] | None = None,
                           kwargs: Mapping[str, Any] | None = None,
                           **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """:meth:`apply_async` for a coroutine, without blocking the event loop
        (:mod:`celeriac.aio.client`)."""
        from celeriac.aio.client import run_blocking

        return await run_blocking(self.apply_async, args, kwargs, **options)

    async def adelay(self, /, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        """:meth:`delay` for a coroutine, without blocking the event loop."""
        return await self.aapply_async(args, kwargs)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Unpack[SendOptions]) -> EagerResult[R]:
        """Run it here and now (``Task.apply``), with extra arguments and options."""
        call = self.merged(args, kwargs, options)
        result: EagerResult[R] = call.app.get_task(call.name).apply(
            list(call.args), call.kwargs, **call.options)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Call the task's function here, with these arguments before its own (Celery's)."""
        call = self.merged(args, kwargs)
        value: R = call.app.get_task(call.name)(*call.args, **call.kwargs)
        return value


def _items(value: Any) -> list[Any]:
    from celeriac.canvas.groups import group

    if value is None:
        return []
    return [value] if isinstance(value, Signature | group | Mapping) else list(value)


def links(value: Links, app: Celeriac) -> list[Any]:
    """A ``link``/``link_error`` option as a list of signatures or groups (dicts rebuilt)."""
    from celeriac.canvas.groups import group

    found: list[Any] = []
    for item in _items(value):
        if isinstance(item, Mapping):
            item = from_dict(item, app)
        if not isinstance(item, Signature | group):
            raise TypeError(f"link/link_error take signatures (task.s(...)), not {type(item).__name__}")
        found.append(item)
    return found


def wire_links(value: Links) -> list[dict[str, Any]] | None:
    """A ``link``/``link_error`` option in the message's wire form (None when empty)."""
    wire = [dict(item) if isinstance(item, Mapping) else item.to_dict() for item in _items(value)]
    return wire or None


def from_dict(d: Mapping[str, Any], app: Celeriac | None = None) -> Any:
    """A signature, chain, group or map rebuilt from Celery's dict form (see
    :meth:`Signature.from_dict`). Raises TypeError for what is not one."""
    if not isinstance(d, Mapping) or not isinstance(d.get("task"), str):
        raise TypeError(f"not a signature in its dict form (task, args, kwargs, options): {d!r:.200}")
    if app is None:
        from celeriac._state import get_current_app

        app = get_current_app()
    kind = d.get("subtask_type")
    if kind is not None:
        from celeriac.canvas import SUBTASK_TYPES

        if kind not in SUBTASK_TYPES:
            raise ConfigurationError(f"unknown signature type {kind!r} ({d['task']})")
        return SUBTASK_TYPES[kind].from_dict(d, app)
    options = wire_options(d.get("options") or {}, d["task"])
    return Signature(d["task"], d.get("args") or (), d.get("kwargs") or {}, options, app=app,
                     immutable=bool(d.get("immutable")))


def wire_options(options: Mapping[str, Any], name: str) -> SendOptions:
    """The options of a signature that travelled as a dict: celeriac's own kept, Celery's
    bookkeeping dropped, anything else dropped with a DEBUG line (an option only Celery
    has cannot act here)."""
    kept: dict[str, Any] = {}
    for key, value in options.items():
        if key in SEND_OPTIONS and key not in CELERY_BOOKKEEPING:
            kept[key] = value
        elif key in WIRE_KEPT and value:  # custom headers and a shadow name travel on
            kept[key] = custom_headers(value) if key == "headers" and isinstance(value, dict) else value
        elif key not in CELERY_BOOKKEEPING:
            log.debug("option %s=%r of signature %s has no meaning in celeriac; dropped",
                      key, value, name)
    return kept  # type: ignore[return-value]  # keys checked against SendOptions above


def signature(varies: Signature[R] | Mapping[str, Any] | str, *args: Any,
              app: Celeriac | None = None, **kwargs: Any) -> Signature[R]:
    """Celery's ``signature()``: a copy of a signature, one rebuilt from its dict form
    (``signature(json.loads(text))``), or a new one by task name
    (``signature("tasks.add", args=(2, 2), countdown=10)``)."""
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        rebuilt: Signature[R] = from_dict(varies, app)
        return rebuilt
    if app is None:
        from celeriac._state import get_current_app

        app = get_current_app()
    sig_args, sig_kwargs = [*args, None, None][:2]
    sig_args = kwargs.pop("args", sig_args)
    sig_kwargs = kwargs.pop("kwargs", sig_kwargs)
    options = kwargs.pop("options", None) or {}
    immutable = bool(kwargs.pop("immutable", False))
    sig_options: SendOptions = {**options, **kwargs}  # type: ignore[typeddict-item]
    return Signature(varies, sig_args, sig_kwargs, sig_options, app=app, immutable=immutable)


def maybe_signature(d: Signature[R] | Mapping[str, Any] | None, app: Celeriac | None = None
                    ) -> Signature[R] | None:
    """Celery's ``maybe_signature``: None stays None, a dict is rebuilt, a signature kept."""
    if d is None or isinstance(d, Signature):
        return d
    rebuilt: Signature[R] = from_dict(d, app)
    return rebuilt
