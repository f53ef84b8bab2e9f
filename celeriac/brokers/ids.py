"""Broker message ids, shared by the Redis and AMQP brokers."""

from __future__ import annotations

import itertools
import os


class MessageIds:
    """Message ids: a random per-process prefix (96 bits) and a counter.

    Ids must never collide -- the Redis publish script takes a known id for a retry and
    stores nothing; the AMQP broker names every copy of a message by it -- and cost a
    fraction of ``uuid4()``. The prefix is drawn again in a forked child, so parent and
    child never share a sequence.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(12).hex()
        self._counter = itertools.count()

    def take(self, n: int) -> list[str]:
        prefix, counter = self._prefix, self._counter
        return [f"{prefix}{next(counter):x}" for _ in range(n)]
