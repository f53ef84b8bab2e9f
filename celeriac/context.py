"""The request context: what a running task can know about its own message.

A :class:`Request` is set in a :class:`contextvars.ContextVar` by the worker
around each task, so it is right per thread and per greenlet alike, and a bound
task reads it as ``self.request``.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """The message behind the running task."""

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
    delivery_info: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None
    is_eager: bool = False
    #: Queue the message came from.
    queue: str | None = None
    #: How many times the broker delivered this message (1 on the first delivery).
    delivery_count: int = 1


current_request: ContextVar[Request | None] = ContextVar("celeriac_request", default=None)
