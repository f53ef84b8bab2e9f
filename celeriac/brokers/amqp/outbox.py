"""Beat claims on RabbitMQ: the claim and its messages in one step, through an outbox.

``beat_claim`` must store a run and publish its messages atomically, and no step spans
two servers. So the claim is the state store's own ``beat_claim`` (its compare-and-set
and its publish are one step there), publishing the messages into the store's *outbox*
queue; the outbox is then relayed to RabbitMQ: fetched from the store, published with
confirms, acked in the store. A beat killed between its claim and the relay leaves the
messages in the outbox, where the next relay (any beat's next claim, any node's next
heartbeat) finds them once their lease runs out. The one double send left: a relay that
dies after RabbitMQ confirmed and before the store's ack (a millisecond window).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Sequence

from celeriac.brokers.base import Broker, OutgoingMessage

log = logging.getLogger("celeriac.amqp")

#: The state store's queue holding claimed beat messages on their way to RabbitMQ.
OUTBOX_QUEUE = "celeriac.amqp.outbox"
#: Seconds an outbox message is leased to a relay (then another relay may take it).
RELAY_LEASE = 30.0
RELAY_BATCH = 100


def wrap(message: OutgoingMessage) -> OutgoingMessage:
    body = json.dumps({"queue": message.queue, "priority": message.priority, "eta": message.eta,
                       "body": base64.b64encode(message.body).decode()}).encode()
    return OutgoingMessage(OUTBOX_QUEUE, body)


def unwrap(body: bytes) -> OutgoingMessage:
    data = json.loads(body)
    return OutgoingMessage(str(data["queue"]), base64.b64decode(data["body"]),
                           priority=int(data["priority"]),
                           eta=None if data["eta"] is None else float(data["eta"]))


class Outbox:
    """Claims runs in the state store and relays their messages to RabbitMQ."""

    def __init__(self, store: Broker, publish: Callable[[Sequence[OutgoingMessage]], object]) -> None:
        self.store = store
        self.publish = publish

    def claim(self, name: str, previous: float | None, run_at: float,
              messages: Sequence[OutgoingMessage]) -> bool:
        claimed = self.store.beat_claim(name, previous, run_at, [wrap(m) for m in messages])
        if claimed and messages:
            self.relay()
        return claimed

    def relay(self) -> int:
        """Move what the outbox holds to RabbitMQ; how many messages were moved."""
        moved = 0
        consumer = f"outbox-relay-{os.getpid()}"
        while batch := self.store.fetch([OUTBOX_QUEUE], RELAY_BATCH, consumer=consumer,
                                        lease=RELAY_LEASE):
            good, bad = [], []
            messages = []
            for delivery in batch:
                try:
                    messages.append(unwrap(delivery.body))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("dropping an unreadable beat outbox message %s: %s", delivery.id, exc)
                    bad.append(delivery)
                else:
                    good.append(delivery)
            if messages:
                self.publish(messages)
            self.store.ack(good)
            if bad:
                self.store.dead_letter(bad, "unreadable beat outbox message")
            moved += len(messages)
        return moved
