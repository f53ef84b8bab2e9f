"""The AMQP broker's records in a Redis state store (:class:`AmqpState` on a RedisBroker).

Everything goes through the store broker's own client, key prefix and
:class:`~celeriac.redisconn.Reconnector`, so connection pooling, fork safety (redis-py
drops a pool inherited by a child) and reconnect logging are the Redis broker's. Keys,
all under ``P:amqp:`` (``P`` = the store's prefix):

``P:amqp:notes:<id>``       list    JSON return notes of one message id, oldest first; the
                                    list expires :data:`NOTE_TTL` after its latest note.
``P:amqp:scheduled:<q>``    zset    message id -> due (unix s) of a delayed copy for queue
                                    ``q``; expires a day after its latest due.
``P:amqp:purged``           zset    queue -> latest purge time (unix s).
``P:amqp:queues``           set     every queue name the AMQP broker declared.

Each method is one round trip. The two writes that must not be repeated -- appending
notes (a repeated charge would count a delivery twice) and dropping the oldest ``n`` (a
repeated ``LTRIM`` would drop notes written since) -- run in ``lua/amqp_state.lua`` with
a receipt, as the Redis broker's publish does, so a retry after a lost reply is safe.
Every other call is idempotent and simply retried.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from celeriac.brokers.amqp.state import NOTE_TTL, AmqpState, ReturnNote
from celeriac.brokers.redis import RECEIPT_TTL_MS, RedisBroker
from celeriac.redisconn import decode

#: How long a queue's scheduled set outlives its latest due time (ms): long enough that
#: no live entry is ever lost, short enough that a set nobody counts again goes away.
SCHEDULED_KEEP_MS = 86_400_000
_SCRIPT = "amqp_state"

T = TypeVar("T")


def _encode(note: ReturnNote) -> str:
    return json.dumps(note.as_dict(), separators=(",", ":"))


class RedisAmqpState(AmqpState):
    """:class:`AmqpState` in the Redis store ``broker`` (sharing its connections)."""

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker
        self._base = f"{broker.prefix}:amqp"

    def _key(self, *parts: str) -> str:
        return ":".join((self._base, *parts))

    def _call(self, fn: Callable[[], T]) -> T:
        """``fn()`` through the store's reconnector (only for calls safe to repeat)."""
        return self._broker._retry.call(fn)

    def _once(self, action: str, args: Sequence[Any]) -> None:
        """Run a receipt-guarded action of the script (a retry applies it at most once)."""
        receipt = os.urandom(12).hex()
        self._broker._run(_SCRIPT, [action, receipt, RECEIPT_TTL_MS, "0", *args], again=3)

    # -- return notes --------------------------------------------------------------------
    def add_notes(self, notes: Sequence[tuple[str, ReturnNote]]) -> None:
        if notes:
            flat = [x for message_id, note in notes for x in (message_id, _encode(note))]
            self._once("notes_add", [round(NOTE_TTL * 1000), *flat])

    def read_notes(self, ids: Collection[str]) -> dict[str, list[ReturnNote]]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        redis = self._broker._redis

        def read() -> list[list[bytes]]:
            pipe = redis.pipeline(transaction=False)
            for message_id in wanted:
                pipe.lrange(self._key("notes", message_id), 0, -1)
            notes: list[list[bytes]] = pipe.execute()
            return notes

        found = {}
        for message_id, raw in zip(wanted, self._call(read), strict=True):
            if raw:
                found[message_id] = [ReturnNote.from_dict(json.loads(item)) for item in raw]
        return found

    def drop_notes(self, counts: Mapping[str, int]) -> None:
        flat = [x for message_id, n in counts.items() if n > 0 for x in (message_id, n)]
        if flat:
            self._once("notes_drop", flat)

    # -- the scheduled index -------------------------------------------------------------
    def add_scheduled(self, entries: Sequence[tuple[str, str, float]]) -> None:
        if not entries:
            return
        flat = [x for queue, message_id, due in entries
                for x in (queue, message_id, repr(float(due)))]
        # Idempotent (ZADD, a longer expiry), so retried like any read.
        self._broker._run(_SCRIPT, ["schedule", repr(time.time()), SCHEDULED_KEEP_MS, *flat])

    def scheduled_counts(self, queues: Collection[str], now: float) -> dict[str, int]:
        names = list(dict.fromkeys(queues))
        if not names:
            return {}
        redis, at = self._broker._redis, repr(float(now))

        def count() -> list[Any]:
            pipe = redis.pipeline(transaction=True)
            for queue in names:
                pipe.zremrangebyscore(self._key("scheduled", queue), "-inf", at)
                pipe.zcount(self._key("scheduled", queue), f"({at}", "+inf")
            counts: list[Any] = pipe.execute()
            return counts

        replies = self._call(count)
        counts = {queue: int(replies[2 * i + 1]) for i, queue in enumerate(names)}
        return {queue: n for queue, n in counts.items() if n}

    def clear_scheduled(self, queues: Collection[str]) -> None:
        keys = [self._key("scheduled", queue) for queue in dict.fromkeys(queues)]
        if keys:
            self._call(lambda: self._broker._redis.delete(*keys))

    # -- purge marks ---------------------------------------------------------------------
    def mark_purged(self, queues: Collection[str], at: float) -> None:
        # GT: a mark only moves forward, whichever of two purges' writes lands last.
        marks = {queue: float(at) for queue in queues}
        if marks:
            self._call(lambda: self._broker._redis.zadd(self._key("purged"), marks, gt=True))

    def purged_at(self, queues: Collection[str]) -> dict[str, float]:
        names = list(dict.fromkeys(queues))
        if not names:
            return {}
        scores = self._call(lambda: self._broker._redis.zmscore(self._key("purged"), names))
        return {queue: float(score) for queue, score in zip(names, scores, strict=True)
                if score is not None}

    # -- queue names ---------------------------------------------------------------------
    def add_queues(self, names: Collection[str]) -> None:
        if names:
            self._call(lambda: self._broker._redis.sadd(self._key("queues"), *names))

    def queues(self) -> set[str]:
        return {decode(name) for name in
                self._call(lambda: self._broker._redis.smembers(self._key("queues")))}
