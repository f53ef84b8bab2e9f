"""The Redis broker's event log (``lua/workers.lua``): worker and task events, capped.

A batch of events (one JSON object per line, as :func:`~celeriac.brokers.base.encode_event`
writes them) is one string key, ``P:events:b:<id>``, indexed in the sorted set
``P:events`` by one small member scored by its last seq. The client SETs the batch and
the script indexes it in the same MULTI, so the script never handles the batch's bytes:
handed to it as an argument, a 166 KB batch cost the server 533 us (Lua copies and
collects every large string it is given or builds, and a sorted set hashes each member
whole), against about 40 us for the transaction (2026-12-05). Readers page through the
index by score and split the batches in the script, so a page costs one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.brokers.base import WorkerEvent, encode_event
from celeriac.brokers.ids import MessageIds
from celeriac.fastjson import dumps, loads

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

    from celeriac.redisconn import Reconnector

#: Seconds a batch SET by :meth:`RedisEvents.emit_encoded` lives if the script that
#: indexes it in the same transaction failed (the script makes an indexed batch permanent).
UNINDEXED_BATCH_TTL = 600

_batches = MessageIds()


class RedisEvents:
    """Mixed into :class:`~celeriac.brokers.redis.RedisBroker`."""

    if TYPE_CHECKING:
        prefix: str
        events_kept: int
        _redis: Redis
        _retry: Reconnector

        def _run(self, name: str, args: Sequence[Any], *, retry: bool = True,
                 again: int | None = None) -> Any: ...

        def _script(self, name: str) -> Script: ...

        def _transaction(self, name: str, queue: Callable[[Any], None]) -> list[Any]: ...

    def emit(self, events: Sequence[WorkerEvent]) -> None:
        now = time.time()
        self.emit_encoded([encode_event(e.type, e.worker, e.data, e.time or now) for e in events])

    def emit_encoded(self, lines: Sequence[bytes]) -> None:
        """One MULTI: the batch SET, then indexed by the script (see the module). A retry
        after a lost reply indexes nothing twice; a batch whose script failed expires."""
        if not lines:
            return
        batch = _batches.take(1)[0]
        name = f"{self.prefix}:events:b:{batch}"
        data = b"\n".join(lines)
        args = ["emit", self.events_kept, len(lines), batch]
        sha = self._script("workers").sha

        def queue(pipe: Any) -> None:
            pipe.set(name, data, ex=UNINDEXED_BATCH_TTL)
            pipe.evalsha(sha, 0, self.prefix, *args)

        self._retry.call(lambda: self._transaction("workers", queue))

    def events(self, after: int = 0, limit: int = 100) -> list[WorkerEvent]:
        """Read by the script, which splits the stored batches (``workers.lua``)."""
        return self._events(["events", after, limit, self.events_kept]) if limit > 0 else []

    def events_of(self, task_id: str, after: int, until: int) -> list[WorkerEvent]:
        """The script keeps only the lines holding the task id as JSON writes it (in any
        field: a superset), so a task's page does not decode the whole log; the uuid is
        checked here."""
        if until <= after:
            return []
        found = self._events(["events", after, until - after, self.events_kept,
                              dumps(task_id), until])
        return [event for event in found if event.data.get("uuid") == task_id]

    def _events(self, args: list[Any]) -> list[WorkerEvent]:
        reply = self._run("workers", args)
        found = []
        for i in range(0, len(reply), 2):
            data = loads(reply[i + 1])
            found.append(WorkerEvent(type=data["type"], worker=data["worker"], data=data["data"],
                                     time=float(data["time"]), seq=int(reply[i])))
        return found

    def newest_event_seq(self) -> int:
        """One ``ZREVRANGE`` of the top of ``P:events`` (a batch, scored by its last seq)."""
        top = self._retry.call(lambda: self._redis.zrevrange(
            f"{self.prefix}:events", 0, 0, withscores=True))
        return int(top[0][1]) if top else 0

