"""The RabbitMQ broker's read model and admin actions for dashboards, and their limits.

RabbitMQ shows a queue's messages only by handing them out, so what the dashboard
gets here is what can be had without side effects:

* **ready**: counted (a passive declare, plus what this process holds unclaimed), not
  listed: ``basic.get`` on a quorum queue is a delivery, which RabbitMQ counts
  against the queue's delivery limit. The page has a total, no rows, and a note.
* **scheduled** and **retries**: delayed messages wait on RabbitMQ's delay ladder,
  which can be neither read nor edited per message; the state store's index counts
  them per queue (``stats().scheduled``) but does not tell retries apart. So
  "scheduled" has the count of both and a note, "retries" a total of 0 and a note
  saying where they are counted; deleting one or making it ready now is refused
  with :class:`~celeriac.exceptions.BrokerError` (``purge`` drops them all).
* **dead**: ``<queue>.dead`` is a classic queue, where ``basic.get`` and closing the
  channel return every message where it was, untouched: dead letters are listed, in
  the queue's own order (oldest first: reaching the newest would mean reading them
  all), a page costing ``offset + limit`` gets. Requeue and delete take the chosen
  ones on a channel of their own and leave the rest (the channel's close returns
  them); a requeued letter is published again (a new message, no deliveries) and
  only then acked, so a connection lost in between may leave it both requeued and
  still dead (at least once, never lost).
* **pause**: the paused set lives in the state store. A worker stops *taking* from a
  paused queue (its fetches leave the queue out); RabbitMQ keeps at most the
  consumer's prefetch of it in that process, unstarted, until the queue is resumed
  or the process exits.

``docs/rabbitmq.md`` says the same for users.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.brokers.amqp import copies, envelope, topology
from celeriac.brokers.amqp.connection import incoming_of
from celeriac.brokers.amqp.params import Incoming
from celeriac.brokers.base import Broker, OutgoingMessage
from celeriac.brokers.browse import (
    DELETABLE,
    DeletableKind,
    Kind,
    MessageSummary,
    Page,
    check_page,
    summarize,
)
from celeriac.exceptions import BrokerError

if TYPE_CHECKING:
    from celeriac.brokers.amqp.connection import AmqpConnection
    from celeriac.brokers.amqp.consume import Buffer
    from celeriac.brokers.amqp.state import AmqpState

#: Dead letters requeued per round (get, publish, ack) when all of a queue's are.
REQUEUE_CHUNK = 1000

NOTES = {
    "ready": "RabbitMQ cannot show ready messages without delivering them: counted only",
    "scheduled": "messages on RabbitMQ's delay ladder cannot be listed: counted only, "
                 "retries included",
    "retries": "RabbitMQ's delay ladder cannot tell retries apart: they are counted with "
               "the scheduled messages",
    "dead": "RabbitMQ dead letters are listed oldest first",
}
LADDER = ("RabbitMQ cannot take a message off its delay ladder: purge the queue to drop "
          "its scheduled messages")
NOW_REFUSED = ("RabbitMQ cannot take a message off its delay ladder: a scheduled message or "
               "retry is delivered when it is due")


def _letter(item: Incoming, queue: str) -> tuple[MessageSummary, OutgoingMessage]:
    """A dead letter's row, and the message that requeueing it publishes."""
    body = envelope.from_amqp(item.body, item.headers, item.properties,
                              exchange=item.exchange, routing_key=item.routing_key)
    failed = float(item.headers.get(copies.FAILED_AT) or 0.0) or None
    row = summarize(copies.message_id(item), queue, body,
                    enqueued_at=float(item.properties.get("timestamp") or 0.0) or (failed or 0.0),
                    deliveries=copies.as_int(item.headers.get(copies.DELIVERIES), 1),
                    reason=str(item.headers.get(copies.REASON) or "dead-lettered by RabbitMQ"),
                    failed_at=failed)
    priority = copies.as_int(item.properties.get("priority"), 0)
    return row, OutgoingMessage(queue, body, priority=min(max(priority, 0), 9))


class AmqpAdmin:
    """Mixed into :class:`~celeriac.brokers.amqp.AmqpBroker`."""

    if TYPE_CHECKING:
        _buffer: Buffer
        _lock: Any

        @property
        def conn(self) -> AmqpConnection: ...

        @property
        def state(self) -> AmqpState: ...

        @property
        def store(self) -> Broker: ...

        def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]: ...

    def browse(self, queue: str, kind: Kind, *, offset: int = 0, limit: int = 50) -> Page:
        check_page(kind, offset, limit)
        if kind == "ready":
            ready = topology.queue_ready_counts(self.conn, [queue]).get(queue, 0)
            with self._lock:
                ready += self._buffer.counts([queue])[queue][0]
            return Page(items=[], total=ready, offset=offset, note=NOTES[kind])
        if kind == "scheduled":
            total = self.state.scheduled_counts([queue], time.time()).get(queue, 0)
            return Page(items=[], total=total, offset=offset, note=NOTES[kind])
        if kind == "retries":
            return Page(items=[], total=0, offset=offset, note=NOTES[kind])
        dead = topology.dead_queue(queue)
        total = topology.queue_ready_counts(self.conn, [dead]).get(dead, 0)
        items = [_letter(item, queue)[0] for item in self._peek(dead, offset + limit)[offset:]]
        return Page(items=items, total=total, offset=offset, note=NOTES[kind])

    def _peek(self, queue: str, count: int) -> list[Incoming]:
        """The first ``count`` messages of classic ``queue``, left where they are."""
        def run(control: Any) -> list[Incoming]:
            channel = control.connection.channel()
            found: list[Incoming] = []
            try:
                channel.queue_declare(queue, passive=True)
                while len(found) < count and (message := channel.basic_get(queue)):
                    found.append(incoming_of(0, queue, message))
            except Exception:  # no such queue: nothing dead-lettered yet
                return []
            finally:
                if channel.is_open:
                    channel.close()  # returns every message got, in place
            return found

        return self.conn.call(run) if count > 0 else []

    def _take_dead(self, queue: str, ids: Sequence[str] | None, requeue: bool) -> int:
        """Take the chosen dead letters of ``queue`` (ids, or up to a chunk of all): publish
        them again first when ``requeue``, then ack them; the rest go back as they were."""
        dead = topology.dead_queue(queue)
        wanted = None if ids is None else set(ids)
        channel: Any = None

        def get(control: Any) -> list[tuple[int, OutgoingMessage]]:
            nonlocal channel
            channel = control.connection.channel()
            chosen: list[tuple[int, OutgoingMessage]] = []
            try:
                channel.queue_declare(dead, passive=True)
            except Exception:
                return []
            while wanted is None or len(chosen) < len(wanted):
                if wanted is None and len(chosen) >= REQUEUE_CHUNK:
                    break
                message = channel.basic_get(dead)
                if message is None:
                    break
                item = incoming_of(0, dead, message)
                if wanted is None or copies.message_id(item) in wanted:
                    chosen.append((item.delivery_tag, _letter(item, queue)[1]))
            return chosen

        def finish(_control: Any, tags: list[int]) -> None:
            if channel is None or not channel.is_open:
                return
            for tag in tags:
                channel.basic_ack(tag)
            channel.close()

        try:
            chosen = self.conn.call(get, retry=False)
            if requeue and chosen:
                self.publish([message for _, message in chosen])
            self.conn.call(lambda control: finish(control, [tag for tag, _ in chosen]),
                           retry=False)
        except BaseException:
            self.conn.call(lambda control: finish(control, []), retry=False)
            raise
        return len(chosen)

    def _all_dead(self, queue: str, ids: Sequence[str] | None, requeue: bool) -> int:
        if ids is not None:
            return self._take_dead(queue, ids, requeue) if ids else 0
        total = 0
        while True:
            done = self._take_dead(queue, None, requeue)
            total += done
            if done < REQUEUE_CHUNK:
                return total

    def requeue_dead(self, queue: str, ids: Sequence[str] | None) -> int:
        return self._all_dead(queue, ids, requeue=True)

    def delete_messages(self, queue: str, kind: DeletableKind,
                        ids: Sequence[str] | None) -> int:
        check_page(kind, 0, 0, DELETABLE)
        if kind != "dead":
            raise BrokerError(LADDER)
        return self._all_dead(queue, ids, requeue=False)

    def enqueue_now(self, queue: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        raise BrokerError(NOW_REFUSED)

    def pause(self, queue: str) -> None:
        self.store.pause(queue)

    def resume(self, queue: str) -> None:
        self.store.resume(queue)

    def paused(self) -> set[str]:
        return self.store.paused()
