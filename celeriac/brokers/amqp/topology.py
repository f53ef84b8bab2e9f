"""Names and declarations on RabbitMQ: queues, their dead-letter queues, the delay ladder.

The layout (design §2) in one place, so the broker, its tests and the docs agree:

* ``<q>``: a **quorum** queue (celeriac's default: replicated, at-least-once
  dead-lettering) with the server-side backstops celeriac relies on, or, with
  ``queue_type="classic"``, a queue declared **exactly as Celery 5 declares it**
  (durable, no arguments but ``x-max-priority``, a direct exchange named after it).
  RabbitMQ refuses a re-declare with other arguments (406) and Celery re-declares
  on every publish, so anything celeriac added would break a Celery producer.
* ``<q>.dead``: a quorum queue for its dead letters, bound to ``celeriac.dead``
  (routing key = ``<q>``), where the server's backstop dead-letters too.
* The **delay ladder**: ``celeriac.delay.<k>``, k = 0..37, each a topic exchange and a
  quorum queue holding messages ``2**k`` ms (``x-message-ttl``), then dead-lettering
  them into level k-1 (level 0: ``celeriac.delay.deliver``). A message's routing key
  is its delay's 38 bits, most significant first, then the escaped queue name: each
  level whose bit is 1 holds it, a 0 bit passes it on through an exchange-to-exchange
  binding. Millisecond levels (kombu's ladder counts seconds) because ``requeue(delay=0.3)``
  and a 1.5 s countdown must not be rounded; quorum because classic queues dead-letter
  at most once (a crash between two levels would lose the message). The last hop binds
  each queue with an **exact** pattern (38 ``*`` words and the escaped name). The name
  is escaped (``%``, ``.``, ``*``, ``#``) so that it is one topic word matching only
  itself: unescaped, queue ``a.b``'s messages would also reach queue ``b`` by ``#.b``,
  and a queue named ``*`` would take everyone's.

Queue arguments are frozen at the first declare (design §10.13): none here depends on
a setting. A queue that exists with other arguments (declared by Celery, or with the
other ``queue_type``) is used as it is, with one warning naming the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from amqp.exceptions import NotFound, PreconditionFailed

from celeriac.brokers.amqp.connection import AmqpConnection
from celeriac.exceptions import ConfigurationError

T = TypeVar("T")

log = logging.getLogger("celeriac.amqp")

QUORUM = "quorum"
CLASSIC = "classic"
QUEUE_TYPES = (QUORUM, CLASSIC)

#: Levels of the delay ladder: delays up to 2**38 - 1 ms (8.7 years), 1 ms granularity.
LADDER_LEVELS = 38
MAX_DELAY_MS = 2**LADDER_LEVELS - 1
#: The server-side backstop against a poison message that celeriac's own count missed
#: (design §0.3). A constant: it is a queue argument, frozen at the first declare, so it
#: must never follow a setting. Set explicitly because RabbitMQ 4.0 defaults it to 20.
DELIVERY_LIMIT = 100
#: The direct exchange dead letters go through (routing key = the source queue's name).
DEAD_EXCHANGE = "celeriac.dead"
#: The ladder's last exchange: each queue is bound to it by its exact pattern.
DELIVER_EXCHANGE = "celeriac.delay.deliver"
#: The exchange a delayed message is published to: the top level.
DELAY_ENTRY = f"celeriac.delay.{LADDER_LEVELS - 1}"
#: AMQP routing keys and binding keys are short strings: at most 255 bytes.
MAX_KEY_BYTES = 255

#: Escapes that keep a queue name one topic word that matches only itself.
_ESCAPES = str.maketrans({"%": "%25", ".": "%2E", "*": "%2A", "#": "%23"})
_ANY_DELAY = ".".join("*" * LADDER_LEVELS)
_DURABLE = {"durable": True, "auto_delete": False}


def level_name(k: int) -> str:
    """The exchange and the queue of ladder level ``k``."""
    return f"celeriac.delay.{k}"


def dead_queue(queue: str) -> str:
    return f"{queue}.dead"


def escape(queue: str) -> str:
    """``queue`` as one topic word: ``%``, ``.``, ``*`` and ``#`` percent-escaped."""
    return queue.translate(_ESCAPES)


def publish_target(queue: str, queue_type: str) -> tuple[str, str]:
    """(exchange, routing key) a message for ``queue`` is published to.

    Classic: Celery's layout, the direct exchange named after the queue. Quorum: the
    default exchange, which needs no exchange declared and routes by the queue's name.
    """
    return (queue, queue) if queue_type == CLASSIC else ("", queue)


def delay_target(queue: str, delay_ms: int) -> tuple[str, str]:
    """(exchange, routing key) of a message for ``queue`` due in ``delay_ms`` ms (> 0)."""
    if delay_ms <= 0:
        raise ValueError(f"delay_target needs a delay > 0 ms, got {delay_ms}: publish to the queue")
    if delay_ms > MAX_DELAY_MS:
        raise ConfigurationError(
            f"a delay of {delay_ms} ms is beyond the longest RabbitMQ's delay ladder holds "
            f"({MAX_DELAY_MS} ms, about 8.7 years): use a nearer eta or countdown")
    return DELAY_ENTRY, _checked_key(".".join(format(delay_ms, "038b")) + "." + escape(queue), queue)


def _checked_key(key: str, queue: str) -> str:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ConfigurationError(
            f"queue name {queue[:80]!r}... is too long for delayed delivery on RabbitMQ: its "
            f"ladder routing key would be {len(key.encode('utf-8', 'surrogatepass'))} bytes, "
            f"AMQP allows {MAX_KEY_BYTES} (escaped names up to {MAX_KEY_BYTES - 2 * LADDER_LEVELS} "
            "bytes fit)")
    return key


def _deliver_pattern(queue: str) -> str:
    return _checked_key(f"{_ANY_DELAY}.{escape(queue)}", queue)


def queue_arguments(queue: str, queue_type: str, max_priority: int | None = None) -> dict[str, Any]:
    """The arguments ``queue`` is declared with (design §2).

    Quorum: no ``x-max-priority`` whatever ``max_priority`` says: RabbitMQ 3.10 refuses it
    on quorum queues (406 "invalid arg"), and the broker orders its buffer by priority.
    """
    if queue_type == CLASSIC:
        return {} if max_priority is None else {"x-max-priority": max_priority}
    if queue_type != QUORUM:
        raise ConfigurationError(f"unknown queue type {queue_type!r} (use {QUORUM!r} or {CLASSIC!r})")
    return {"x-queue-type": QUORUM, "x-dead-letter-exchange": DEAD_EXCHANGE,
            "x-dead-letter-routing-key": queue, "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish", "x-delivery-limit": DELIVERY_LIMIT}


def declare_ladder(conn: AmqpConnection) -> None:
    """Declare the ladder's 38 levels and its deliver exchange. Idempotent.

    Every declare and bind but the last is sent without waiting (``nowait``) in one call
    on the owner: the last one waits, and RabbitMQ answers a channel's methods in order,
    so its answer means all were applied, and an earlier failure closes the channel and
    fails it (:class:`BrokerError`). Measured on the test node (RabbitMQ 3.10.8, loaded
    2-core machine): 0.33-0.49 s the first time (the server creates 38 quorum queues),
    11-18 ms when everything exists already; waiting for each of the 153 answers
    instead: 0.40-0.46 s and 45-52 ms.
    """
    def run(channel: Any) -> None:
        channel.exchange_declare(DELIVER_EXCHANGE, "topic", nowait=True, **_DURABLE)
        for k in range(LADDER_LEVELS):
            name = level_name(k)
            lead = "*." * (LADDER_LEVELS - 1 - k)  # the bits of the levels above k
            channel.exchange_declare(name, "topic", nowait=True, **_DURABLE)
            channel.queue_declare(name, nowait=True, arguments={
                "x-queue-type": QUORUM, "x-message-ttl": 2**k,
                "x-dead-letter-exchange": level_name(k - 1) if k else DELIVER_EXCHANGE,
                "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"},
                **_DURABLE)
            channel.queue_bind(name, name, f"{lead}1.#", nowait=True)
            channel.exchange_bind(level_name(k - 1) if k else DELIVER_EXCHANGE, name, f"{lead}0.#",
                                  nowait=True)
        channel.exchange_declare(DELIVER_EXCHANGE, "topic", **_DURABLE)  # waits: all applied

    conn.call(run)


def declare_queue(conn: AmqpConnection, queue: str, queue_type: str, *,
                  max_priority: int | None = None) -> None:
    """Declare ``queue``, its dead-letter queue and its ladder binding (design §2).

    A queue (or dead-letter queue) that exists with other arguments is used as it is
    (a passive declare), with one warning naming the server's complaint: RabbitMQ
    refuses the declare with 406 "inequivalent arg" and never changes a queue's
    arguments, so failing would only stop a worker that can still work (the arguments
    are backstops: celeriac counts deliveries and dead-letters client-side anyway).
    Any other refusal raises :class:`BrokerError`.
    """
    arguments = queue_arguments(queue, queue_type, max_priority)
    pattern = _deliver_pattern(queue)

    def run(channel: Any) -> None:
        _declare_or_use(channel, queue, arguments)
        # Classic, no arguments: `celeriac dead` reads dead letters by taking them and
        # handing them back, which a quorum queue counts as deliveries (and RabbitMQ 4
        # dead-letters, to nowhere, after its default delivery limit of 20).
        _declare_or_use(channel, dead_queue(queue), {})
        channel.exchange_declare(DEAD_EXCHANGE, "direct", **_DURABLE)
        channel.queue_bind(dead_queue(queue), DEAD_EXCHANGE, queue)
        channel.exchange_declare(DELIVER_EXCHANGE, "topic", **_DURABLE)
        channel.queue_bind(queue, DELIVER_EXCHANGE, pattern)
        if queue_type == CLASSIC:  # as kombu declares Celery's: a direct durable exchange
            channel.exchange_declare(queue, "direct", **_DURABLE)
            channel.queue_bind(queue, queue, queue)

    conn.call(run)


def _declare_or_use(channel: Any, queue: str, arguments: Mapping[str, Any]) -> None:
    """Declare ``queue``; if it exists with other arguments, warn and use it as it is.

    The declare runs on a channel of its own: a 406 closes the channel it came on, and
    the control channel must stay usable for the rest of the caller's work.
    """
    def declare(scratch: Any) -> None:
        scratch.queue_declare(queue, arguments=dict(arguments), **_DURABLE)

    try:
        _on_scratch(channel, declare)
    except PreconditionFailed as exc:
        if "inequivalent arg" not in str(exc):
            raise
        log.warning("queue %r exists on RabbitMQ with other arguments than celeriac declares "
                    "(%s); using it as it is. Wanted: %s. To change it, delete or migrate the "
                    "queue (RabbitMQ never changes a queue's arguments)", queue, exc.reply_text,
                    dict(arguments))
        channel.queue_declare(queue, passive=True)


def _on_scratch(channel: Any, fn: Callable[[Any], T]) -> T:
    """``fn`` on a new channel of ``channel``'s connection, closed afterwards.

    For calls whose expected failure closes their channel (a 404 of a passive declare,
    a 406): the server closes the scratch channel and the caller's stays open.
    """
    scratch = channel.connection.channel()
    try:
        return fn(scratch)
    finally:
        if not getattr(scratch, "server_closed", False) and scratch.is_open:
            scratch.close()


def _per_queue(conn: AmqpConnection, queues: Iterable[str],
               fn: Callable[[Any, str], int]) -> dict[str, int]:
    """``fn(channel, queue)`` for each queue in one call on the owner; a missing queue: 0.

    A missing queue closes the channel it was asked on (404), so the calls run on a
    scratch channel, replaced after each 404: the control channel never sees one.
    """
    names = list(dict.fromkeys(queues))

    def run(channel: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        scratch = channel.connection.channel()
        try:
            for queue in names:
                try:
                    counts[queue] = fn(scratch, queue)
                except NotFound:
                    counts[queue] = 0
                    scratch = channel.connection.channel()
        finally:
            if scratch.is_open:
                scratch.close()
        return counts

    return conn.call(run) if names else {}


def queue_ready_counts(conn: AmqpConnection, queues: Iterable[str]) -> dict[str, int]:
    """Ready messages per queue (a passive declare: unacked ones are not counted); missing: 0."""
    return _per_queue(conn, queues, lambda channel, queue: int(
        channel.queue_declare(queue, passive=True).message_count))


def purge_queues(conn: AmqpConnection, queues: Iterable[str]) -> int:
    """Drop the ready messages of ``queues`` (unacked ones stay); how many were dropped."""
    return sum(_per_queue(conn, queues, lambda channel, queue: int(channel.queue_purge(queue) or 0))
               .values())
