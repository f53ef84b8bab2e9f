"""The copies of a message celeriac puts on RabbitMQ, and what it reads back from them.

A message keeps its broker id and publish stamp in every copy (a requeue, a retry, a
trip through the delay ladder, a dead letter), as application headers beside Celery's
own (``x-celeriac-*``; Celery's worker ignores them):

========================  ==========================================================
``x-celeriac-id``         broker id, the same for every copy (``Delivery.id``); a
                          message Celery published has none and gets ``t:<task id>``
``x-celeriac-stamp``      publish time in ns: the buffer serves oldest first by it
``x-celeriac-charged``    deliveries charged before this copy (absent: 0)
``x-celeriac-suspect``    suspect group (absent: 0)
``x-celeriac-queue``      the queue a delayed copy is for
``x-celeriac-due``        when a delayed copy is due (Unix ms)
``x-celeriac-sent``       when this copy was sent to the ladder (Unix ms): a purge of
                          its queue after that drops it on arrival
``x-celeriac-reason``     a dead letter's reason; ``x-celeriac-failed-at`` its time (s)
``x-celeriac-deliveries`` a dead letter's delivery count
========================  ==========================================================

RabbitMQ's own headers (``x-death`` and the rest, added on every hop of the ladder)
are dropped from every copy celeriac writes, so a retried message does not carry a
growing history (celery #9867).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from celeriac.brokers.amqp import topology
from celeriac.brokers.amqp.params import Incoming, Outgoing

ID = "x-celeriac-id"
STAMP = "x-celeriac-stamp"
CHARGED = "x-celeriac-charged"
SUSPECT = "x-celeriac-suspect"
QUEUE = "x-celeriac-queue"
DUE = "x-celeriac-due"
SENT = "x-celeriac-sent"
REASON = "x-celeriac-reason"
FAILED_AT = "x-celeriac-failed-at"
DELIVERIES = "x-celeriac-deliveries"

#: The headers this module writes (the envelope's own ``x-celeriac-raw`` and
#: ``x-celeriac-body-encoding`` stay with every copy).
BROKER_HEADERS = frozenset({ID, STAMP, CHARGED, SUSPECT, QUEUE, DUE, SENT, REASON, FAILED_AT,
                            DELIVERIES})
#: Headers RabbitMQ adds that no copy written by celeriac keeps.
SERVER_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue",
                  "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
                  "x-last-death-reason", "x-delivery-count", "x-acquired-count")


def as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def message_id(incoming: Incoming) -> str:
    """The broker id of a delivery; for a foreign (Celery) message, one from its task id."""
    value = incoming.headers.get(ID)
    if value:
        return str(value)
    task_id = incoming.headers.get("id") or incoming.properties.get("correlation_id")
    return f"t:{task_id}" if task_id else f"t:{incoming.generation}.{incoming.delivery_tag}"


def stamp(incoming: Incoming) -> int:
    """The publish stamp (ns); a foreign message's is its arrival."""
    value = as_int(incoming.headers.get(STAMP), 0)
    return value or time.time_ns()


def priority(incoming: Incoming) -> int:
    return min(9, max(0, as_int(incoming.properties.get("priority"), 0)))


#: A foreign eta this close (seconds) is run now rather than sent through the ladder.
EARLY_ENOUGH = 0.001


def foreign_due(incoming: Incoming, now: float | None = None) -> float | None:
    """When a message a foreign producer published to its queue ahead of time is due
    (Unix seconds), or None: it may run now.

    Celery (protocol 2, classic queues) publishes a countdown or eta task to its queue
    at once with an ``eta`` header (ISO 8601: naive is UTC, as celeriac reads it; an
    offset is honoured) and its worker holds it unacked in memory until then (celery
    #2541). celeriac's broker instead moves such a delivery into the delay ladder when
    it arrives (:func:`again` with this due time, uncharged), so nothing waits in a
    worker. Only a delivery with no ``x-celeriac-id`` is looked at: a copy celeriac
    wrote (its own delayed publish, or a foreign message already sent through the
    ladder) is due when it arrives, whatever its ``eta`` says to the millisecond. An
    ``eta`` that is not ISO 8601 gives None: the worker reads the header again and
    refuses the message with that reason.
    """
    headers = incoming.headers
    value = headers.get("eta")
    if value is None or headers.get(ID):
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    due = moment.timestamp()
    return due if due - (time.time() if now is None else now) >= EARLY_ENOUGH else None


def _base_headers(incoming: Incoming) -> dict[str, Any]:
    headers = {key: value for key, value in incoming.headers.items()
               if key not in SERVER_HEADERS and key not in BROKER_HEADERS}
    headers[ID] = message_id(incoming)
    headers[STAMP] = stamp(incoming)
    return headers


def _properties(incoming: Incoming) -> dict[str, Any]:
    return {key: value for key, value in incoming.properties.items() if value is not None}


def again(incoming: Incoming, *, charged: int, suspect: int, queue_type: str,
          delay: float = 0.0) -> tuple[Outgoing, float | None]:
    """The copy that puts a delivery back in its queue (after ``delay`` seconds).

    Returns the copy and its due time (Unix seconds) when it goes through the ladder.
    """
    headers = _base_headers(incoming)
    if charged:
        headers[CHARGED] = charged
    if suspect:
        headers[SUSPECT] = suspect
    return addressed(incoming.queue, incoming.body, headers, _properties(incoming),
                     queue_type=queue_type, delay=delay)


def addressed(queue: str, body: bytes, headers: dict[str, Any], properties: Mapping[str, Any],
              *, queue_type: str, delay: float) -> tuple[Outgoing, float | None]:
    """A copy for ``queue``: straight to it, or into the delay ladder when ``delay`` > 0."""
    delay_ms = round(delay * 1000)
    if delay_ms <= 0:
        exchange, routing_key = topology.publish_target(queue, queue_type)
        return Outgoing(routing_key, body, exchange, headers, properties), None
    now_ms = time.time() * 1000
    headers[QUEUE] = queue
    headers[DUE] = round(now_ms + delay_ms)
    headers[SENT] = round(now_ms)
    exchange, routing_key = topology.delay_target(queue, delay_ms)
    return Outgoing(routing_key, body, exchange, headers, properties), (now_ms + delay_ms) / 1000


def dead(incoming: Incoming, *, reason: str, deliveries: int) -> Outgoing:
    """The dead-letter copy of a delivery, for ``<queue>.dead``."""
    headers = _base_headers(incoming)
    headers[QUEUE] = incoming.queue
    headers[REASON] = reason
    headers[FAILED_AT] = time.time()
    headers[DELIVERIES] = deliveries
    return Outgoing(topology.dead_queue(incoming.queue), incoming.body, "", headers,
                    _properties(incoming))


def sent_at(incoming: Incoming) -> float | None:
    """When a delayed copy was sent to the ladder (Unix seconds), or None."""
    value = incoming.headers.get(SENT)
    return as_int(value) / 1000 if value is not None else None
