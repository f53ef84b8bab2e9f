"""What the RabbitMQ broker keeps beside RabbitMQ, in its *state store* (issue 12, design §3.3-3.7).

RabbitMQ holds the messages. What it cannot hold -- a key-value record, a compare-and-set,
a count that can go down -- lives in a Redis or SQLite store (``broker_state_url``), which
already serves the Broker methods that need none of RabbitMQ (workers, events, control,
revocations, beat, rate limits: :class:`~celeriac.brokers.amqp.AmqpBroker` delegates them
unchanged). On top of that the AMQP broker keeps four small things, all keyed, all
expiring, described here and implemented once per store:

* **Return notes** (:class:`ReturnNote`): what happened each time a copy of a message went
  back to its queue without celeriac republishing it (a lease ran out, a consumer released
  it, a process or connection died). RabbitMQ's own delivery count cannot be taken back and
  changed meaning between versions, so celeriac counts deliveries itself: a message's
  count is the ``x-celeriac-charged`` header of its copy plus the charges of its notes.
  Notes are read, not consumed (a copy may come back several times) and dropped only once
  they were folded into a republished copy's headers or the message was settled.
* **The scheduled index**: the due time of every delayed message per queue, because the
  delay ladder cannot be counted per target queue (``stats().scheduled``).
* **Purge marks**: when a queue was last purged, so that a delayed copy published before
  the purge and still on the ladder is dropped when it arrives.
* **Queue names**: every queue this broker declared, for ``stats()`` and ``purge(None)``
  (AMQP cannot list queues).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.brokers.base import Broker

#: How long a note is kept when nobody folds or drops it (the message was acked elsewhere).
NOTE_TTL = 86_400.0

Settle = Literal["ack", "dead", "requeue"]


@dataclass(frozen=True)
class ReturnNote:
    """One return of a message's copy to its queue, and who pays for it.

    Written by whoever knows what happened (the consumer that let a lease run out or
    released it, the supervisor when a worker process died, the reaper when a node
    vanished); read by the next fetcher of the redelivered copy.
    """

    #: 1: this return counts as a delivery (the message ran, or may have); 0: it did not.
    charge: int = 0
    #: 0, or the message is suspect with this group (see ``Delivery.suspect``).
    suspect: int = 0
    #: A settling the writer could not apply itself (the supervisor settling a task of a
    #: process it killed): the next fetcher acks, dead-letters or requeues the copy unrun.
    settle: Settle | None = None
    #: The dead-letter reason, with ``settle="dead"``.
    reason: str = ""
    #: Seconds to wait before the message is ready again, with ``settle="requeue"``.
    delay: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"charge": self.charge, "suspect": self.suspect, "settle": self.settle,
                "reason": self.reason, "delay": self.delay}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ReturnNote:
        settle = data.get("settle")
        return cls(charge=int(data.get("charge", 0)),  # type: ignore[call-overload]
                   suspect=int(data.get("suspect", 0)),  # type: ignore[call-overload]
                   settle=settle if settle in ("ack", "dead", "requeue") else None,
                   reason=str(data.get("reason", "")),
                   delay=float(data.get("delay", 0.0)))  # type: ignore[arg-type]


class AmqpState(ABC):
    """The AMQP broker's own records in the state store. Thread-safe; safe across fork
    (as the store's broker is: connections are per process).

    Implemented once per store, on that store's broker and its connections:
    :mod:`~celeriac.brokers.amqp.state_redis` and :mod:`~celeriac.brokers.amqp.state_sqlite`
    (pick one with :func:`state_for`). "One round trip" is one pipeline or script call on
    Redis and one transaction on SQLite. A call interrupted by a lost connection is retried
    by the store's reconnector, and applies once: the writes that could not be repeated
    (appending and dropping notes) carry a receipt; every other write is idempotent.
    Methods given nothing to do return at once, without a round trip.
    """

    # -- return notes --------------------------------------------------------------------
    @abstractmethod
    def add_notes(self, notes: Sequence[tuple[str, ReturnNote]]) -> None:
        """Append each ``(message id, note)``, in order, in one round trip.

        A message's notes expire :data:`NOTE_TTL` after its latest one was added.
        """

    @abstractmethod
    def read_notes(self, ids: Collection[str]) -> dict[str, list[ReturnNote]]:
        """The notes of each id, oldest first, in one round trip; ids with none are left out."""

    @abstractmethod
    def drop_notes(self, counts: Mapping[str, int]) -> None:
        """Drop the oldest ``counts[id]`` notes of each id, in one round trip.

        Exactly those: a note added after they were read stays (it is about the
        message, and is counted at its next redelivery).
        """

    # -- the scheduled index -------------------------------------------------------------
    @abstractmethod
    def add_scheduled(self, entries: Sequence[tuple[str, str, float]]) -> None:
        """Record ``(queue, message id, due)`` for delayed messages (due: Unix seconds)."""

    @abstractmethod
    def scheduled_counts(self, queues: Collection[str], now: float) -> dict[str, int]:
        """Per queue, how many recorded entries are due after ``now`` (entries due by
        ``now`` are deleted on the way); queues with none are left out."""

    @abstractmethod
    def clear_scheduled(self, queues: Collection[str]) -> None:
        """Forget every entry of ``queues`` (they were purged)."""

    # -- purge marks ---------------------------------------------------------------------
    @abstractmethod
    def mark_purged(self, queues: Collection[str], at: float) -> None:
        """Record that ``queues`` were purged at ``at`` (Unix seconds)."""

    @abstractmethod
    def purged_at(self, queues: Collection[str]) -> dict[str, float]:
        """The latest purge time of each queue that has one."""

    # -- queue names ---------------------------------------------------------------------
    @abstractmethod
    def add_queues(self, names: Collection[str]) -> None:
        """Remember queue names (idempotent)."""

    @abstractmethod
    def queues(self) -> set[str]:
        """Every remembered queue name."""


def state_for(store: Broker) -> AmqpState:
    """The :class:`AmqpState` of ``store`` (the broker built from ``broker_state_url``).

    A :class:`~celeriac.brokers.sqlite.SQLiteBroker` or a
    :class:`~celeriac.brokers.redis.RedisBroker`; anything else is refused with a
    :class:`ConfigurationError` naming its scheme. The implementations are imported
    here, so a SQLite store never needs the ``redis`` package.
    """
    from celeriac.brokers.sqlite import SQLiteBroker

    if isinstance(store, SQLiteBroker):
        from celeriac.brokers.amqp.state_sqlite import SQLiteAmqpState
        return SQLiteAmqpState(store)
    # A RedisBroker exists only once its module was imported: looking it up here keeps
    # ``redis`` an optional dependency.
    redis_module = sys.modules.get("celeriac.brokers.redis")
    if redis_module is not None and isinstance(store, redis_module.RedisBroker):
        from celeriac.brokers.amqp.state_redis import RedisAmqpState
        return RedisAmqpState(store)
    scheme = urlparse(store.url).scheme or store.url
    usable = "use a redis://, rediss://, unix:// (Redis) or sqlite:// URL"
    if not store.shared_between_processes:
        raise ConfigurationError(
            f"broker_state_url {scheme}:// cannot hold the RabbitMQ broker's state: it lives "
            f"inside one process, and every worker and producer process must share that "
            f"state; {usable}")
    raise ConfigurationError(
        f"broker_state_url {scheme}:// cannot hold the RabbitMQ broker's state (no state store "
        f"for it); {usable}")
