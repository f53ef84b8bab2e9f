"""Reading the dead letters of RabbitMQ queues without taking them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celeriac.brokers.amqp import copies, envelope, topology
from celeriac.brokers.amqp.connection import AmqpConnection, incoming_of
from celeriac.brokers.amqp.params import Incoming
from celeriac.brokers.base import DeadLetter

#: Most dead letters read per call (all of them are read to find the newest).
DEAD_LETTERS_READ = 10_000


def dead_letters(conn: AmqpConnection, queues: Sequence[str], limit: int) -> list[DeadLetter]:
    """The newest ``limit`` dead letters of ``queues``, newest first."""
    result = []
    for item in _read_letters(conn, [topology.dead_queue(q) for q in queues]):
        body = envelope.from_amqp(item.body, item.headers, item.properties,
                                  exchange=item.exchange, routing_key=item.routing_key)
        result.append(DeadLetter(
            id=copies.message_id(item), queue=str(item.headers.get(copies.QUEUE) or item.queue),
            body=body, reason=str(item.headers.get(copies.REASON) or _server_reason(item)),
            delivery_count=copies.as_int(item.headers.get(copies.DELIVERIES), 1),
            failed_at=float(item.headers.get(copies.FAILED_AT) or 0.0)))
    result.sort(key=lambda letter: letter.failed_at, reverse=True)
    return result[:limit]


def _server_reason(item: Incoming) -> str:
    """The reason of a dead letter RabbitMQ wrote itself (its delivery-limit backstop)."""
    reason = str(item.headers.get("x-first-death-reason") or "dead-lettered by RabbitMQ")
    if reason == "delivery_limit":
        return f"RabbitMQ's delivery limit ({topology.DELIVERY_LIMIT}) exceeded"
    return f"dead-lettered by RabbitMQ: {reason}"


def _read_letters(conn: AmqpConnection, queues: Sequence[str]) -> list[Incoming]:
    """Every message of the dead-letter ``queues``, read without taking them.

    Read with ``basic.get`` on a channel of its own, closed at the end: closing it
    returns every message to its queue, where it was.
    """
    def run(control: Any) -> list[Incoming]:
        channel = control.connection.channel()
        found: list[Incoming] = []
        try:
            for queue in queues:
                try:
                    channel.queue_declare(queue, passive=True)
                except Exception:
                    channel = control.connection.channel()
                    continue
                while len(found) < DEAD_LETTERS_READ and (message := channel.basic_get(queue)):
                    found.append(incoming_of(0, queue, message))
        finally:
            if channel.is_open:
                channel.close()
        return found

    return conn.call(run)
