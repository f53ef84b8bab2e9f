"""The request context: what a running task can know about its own message.

A :class:`Request` is set in a :class:`contextvars.ContextVar` by the worker
around each task, so it is right per thread and per greenlet alike, and a bound
task reads it as ``self.request``.

Headers that are not part of the task protocol -- a trace context a
``before_task_publish`` receiver added, say -- are readable as Celery exposes
them: ``self.request.headers`` (a dict of them, or None when there are none) and
as attributes, ``self.request.traceparent`` or ``getattr(self.request, key, None)``,
which is how OpenTelemetry's Celery instrumentation reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.task import MessageOptions, Task

#: Headers of the task protocol (``docs/protocol.md``) and the few Celery adds: every
#: other header of a message is a custom one, exposed on the request.
PROTOCOL_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
    "ignore_result", "compression", "stamped_headers", "stamps", "replaced_task_nesting",
})


def custom_headers(headers: Mapping[str, Any]) -> dict[str, Any] | None:
    """The headers of a message that are not the protocol's own; None when there are none
    (as Celery's ``request.headers``). A message without any costs one subset test
    (about half a microsecond)."""
    if PROTOCOL_HEADERS.issuperset(headers):
        return None
    return {key: value for key, value in headers.items() if key not in PROTOCOL_HEADERS}


@dataclass
class Request:
    """The message behind the running task.

    Not frozen, as Celery's request is not: one is built for every task, and a frozen
    dataclass of this many fields costs several microseconds more to build. The worker
    never reads it back after the task ran, so a task changing it changes nothing else.
    """

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    eta: float | None = None
    expires: float | None = None
    #: From a worker: ``exchange``, ``routing_key`` (the queue), ``priority`` and
    #: ``redelivered`` (True when the broker delivered this message before); from
    #: ``apply``: ``is_eager``, ``exchange``, ``routing_key`` and ``priority``, as in Celery.
    delivery_info: dict[str, Any] = field(default_factory=dict)
    #: The worker's node name (``-n``; ``celeriac.PID@host`` by default); this machine's
    #: name in an eager run, as in Celery.
    hostname: str | None = None
    is_eager: bool = False
    #: Queue the message came from.
    queue: str | None = None
    #: How many times the broker delivered this message (1 on the first delivery).
    delivery_count: int = 1
    #: The per-call options the message carried (``apply_async(priority=9, time_limit=5)``):
    #: a retry sends them again, see :meth:`execution_options`.
    priority: int | None = None
    #: (hard, soft) time limits in seconds, either may be None.
    timelimit: tuple[float | None, float | None] = (None, None)
    ignore_result: bool = False
    serializer: str | None = None
    #: The process that sent the message (``gen<pid>@<host>``).
    origin: str | None = None
    #: The message's custom headers (see :func:`custom_headers`), or None.
    headers: dict[str, Any] | None = None
    #: The name the sender gave this run for logs and events (``apply_async(shadow=)``).
    shadow: str | None = None
    #: True when no worker or ``apply`` runs the task: its function was called as a
    #: function, outside any task (Celery's default, so an empty request says so).
    called_directly: bool = True
    #: The message's ``correlation_id`` and ``reply_to`` properties (the first is the
    #: task id in protocol v2).
    correlation_id: str | None = None
    reply_to: str | None = None
    #: What the message's body embeds: signatures to call after success (``callbacks``)
    #: or failure (``errbacks``), the rest of a ``chain``, the ``chord`` body; None when absent.
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: dict[str, Any] | None = None
    #: The task's position in its group (the ``group_index`` header), or None.
    group_index: int | None = None
    #: Results of the tasks sent while this one runs (stored with its result, as Celery's).
    children: list[Any] = field(default_factory=list)

    if not TYPE_CHECKING:  # at run time only: mypy keeps checking attribute names
        def __getattr__(self, name: str) -> Any:
            """A custom header as an attribute (``self.request.traceparent``), as in Celery."""
            headers = self.__dict__.get("headers") if not name.startswith("__") else None
            if headers and name in headers:
                return headers[name]
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get(self, key: str, default: Any = None) -> Any:
        """An attribute or custom header by name, or ``default`` (Celery's ``request.get``)."""
        return getattr(self, key, default)

    @property
    def time_limit(self) -> float | None:
        """The message's hard time limit (Celery's spelling of ``timelimit[0]``)."""
        return self.timelimit[0]

    @property
    def soft_time_limit(self) -> float | None:
        """The message's soft time limit (``timelimit[1]``)."""
        return self.timelimit[1]

    @property
    def name(self) -> str:
        """The task name (Celery's ``request.task`` spelling is :attr:`task`)."""
        return self.task

    def execution_options(self) -> MessageOptions:
        """The options this message was sent with, to send it again (``Task.retry``):
        one value travels from ``apply_async`` to the message, to ``self.request``, and
        back, so a retry keeps the call's own priority, limits, queue and lineage."""
        return {
            "queue": self.queue, "priority": self.priority, "time_limit": self.timelimit[0],
            "soft_time_limit": self.timelimit[1], "serializer": self.serializer,
            "ignore_result": self.ignore_result, "expires": self.expires,
            "root_id": self.root_id, "parent_id": self.parent_id, "group": self.group,
            # A retry keeps what follows the task: callbacks, errbacks, the rest of a chain.
            "link": self.callbacks, "link_error": self.errbacks, "chain": self.chain,
            # ... and its custom headers, shadow name and reply_to, as Celery's retry does.
            "headers": self.headers, "shadow": self.shadow, "reply_to": self.reply_to,
            # ... and its place in a chord: a retried member joins, a retried body claims.
            "chord": self.chord, "group_index": self.group_index,
            "chord_claim": (self.headers or {}).get("celeriac_chord_claim"),  # CHORD_CLAIM_HEADER
        }


current_request: ContextVar[Request | None] = ContextVar("celeriac_request", default=None)
#: The task whose run :data:`current_request` describes (``celeriac.current_task``): set
#: and reset with it, by the one function every run goes through (worker or ``apply``).
current_task_var: ContextVar[Task[..., Any] | None] = ContextVar("celeriac_task", default=None)
