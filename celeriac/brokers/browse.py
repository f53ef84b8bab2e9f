"""The broker's read model for dashboards: pages of messages, and how a row is made.

A dashboard lists a queue's ready, scheduled, retrying and dead messages, a page
at a time, from the broker itself (never from a mirror in its own memory), so
every listing is paginated on the server: a page costs O(page) plus an index
look-up, never a scan of the queue. Each broker keeps the indexes that allow it
(see the broker modules, and ``docs/architecture.md``).

The broker stores bodies as opaque bytes; :func:`summarize` peeks at the
protocol v2 envelope of the few messages on a page to show what they are (task
name and id, the ``argsrepr``/``kwargsrepr`` previews, ``retries``). A body that
is not an envelope still gets a row, with what could be read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from celeriac.exceptions import ConfigurationError

#: What :meth:`~celeriac.brokers.base.Broker.browse` lists: ready messages (claim order),
#: scheduled ones (an eta or countdown, due first), retries (a task's retry waiting for
#: its countdown, due first) and dead letters (newest first).
Kind = Literal["ready", "scheduled", "retries", "dead"]
KINDS: tuple[Kind, ...] = ("ready", "scheduled", "retries", "dead")
#: The kinds whose messages can be deleted one by one (ready ones are purged instead).
DeletableKind = Literal["scheduled", "retries", "dead"]
DELETABLE: tuple[DeletableKind, ...] = ("scheduled", "retries", "dead")
#: The longest ``args`` preview of a row.
ARGS_PREVIEW = 500
#: The most rows one page may hold.
MAX_PAGE = 1000


@dataclass(frozen=True)
class MessageSummary:
    """One row of a listing."""

    #: The broker's message id: what ``requeue_dead``, ``delete_messages`` and
    #: ``enqueue_now`` take.
    id: str
    task_id: str
    #: The task name ("" when the body is not a task message).
    task: str
    queue: str
    #: ``argsrepr, kwargsrepr`` of the envelope, at most :data:`ARGS_PREVIEW` characters;
    #: raw text (a page escapes it).
    args: str
    #: Unix time it was (last) published.
    enqueued_at: float
    #: When a scheduled or retrying message is due (Unix time); None otherwise.
    due_at: float | None
    #: The protocol v2 ``retries`` header: how many times the task was retried before.
    retries: int
    #: How many times the broker has handed it out.
    deliveries: int
    #: Dead letters: why it was dead-lettered.
    reason: str | None = None
    #: Dead letters: when.
    failed_at: float | None = None


@dataclass(frozen=True)
class Page:
    """A page of a listing and the size of the whole listing.

    ``total`` with no ``items`` is a listing the broker can count but not show (RabbitMQ's
    ready messages: see ``docs/rabbitmq.md``), as well as an empty one or an offset past
    the end.
    """

    items: list[MessageSummary]
    total: int
    offset: int
    #: Why the page shows less than its kind suggests, when it does (RabbitMQ's limits).
    note: str | None = None


def check_page(kind: str, offset: int, limit: int, kinds: tuple[str, ...] = KINDS) -> None:
    """Refuse an unknown kind or a page out of range before asking the server."""
    if kind not in kinds:
        raise ConfigurationError(f"unknown listing {kind!r}: expected one of {', '.join(kinds)}")
    if offset < 0 or not 0 <= limit <= MAX_PAGE:
        raise ConfigurationError(
            f"page offset={offset}, limit={limit}: need offset >= 0 and 0 <= limit <= {MAX_PAGE}")


def _headers(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    return headers if isinstance(headers, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def is_retry(body: bytes) -> bool:
    """Whether a message is a retry of a task (its ``retries`` header is above 0).

    Brokers ask only for messages published with an eta, to file them under
    "retries" rather than "scheduled".
    """
    retries = _headers(body).get("retries")
    return type(retries) is int and retries > 0


def summarize(id: str, queue: str, body: bytes, *, enqueued_at: float,
              due_at: float | None = None, deliveries: int = 0, reason: str | None = None,
              failed_at: float | None = None) -> MessageSummary:
    """The row of one stored message, read from its envelope's headers."""
    headers = _headers(body)
    retries = headers.get("retries")
    args = _text(headers.get("argsrepr"))
    kwargs = _text(headers.get("kwargsrepr"))
    preview = f"{args}, {kwargs}" if kwargs and kwargs != "{}" else args
    return MessageSummary(
        id=id, task_id=_text(headers.get("id")), task=_text(headers.get("task")), queue=queue,
        args=preview[:ARGS_PREVIEW], enqueued_at=enqueued_at, due_at=due_at,
        retries=retries if type(retries) is int and retries >= 0 else 0,
        deliveries=deliveries, reason=reason, failed_at=failed_at)
