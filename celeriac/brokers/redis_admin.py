"""The Redis broker's read model and admin actions for dashboards (``lua/browse.lua``,
``lua/admin.lua``).

Every listing is a sorted set, so a page is a rank range: ``ZRANGE`` finds rank
``offset`` in O(log n) and reads ``limit`` entries, then one ``HMGET`` per message
on the page; ``total`` is ``ZCARD``. Ready messages are ``P:ready:<q>`` (claim
order), scheduled ones ``P:delayed:<q>`` and retries ``P:retry:<q>`` (due first;
the two are apart because publish files a message whose ``retries`` header is
above 0 under ``P:retry:<q>``), dead letters ``P:dead:<q>`` (newest first). Each
call is one script, one round trip, whatever the size of the queue; bulk actions
("all of the queue") go in chunks of :data:`ADMIN_CHUNK` so no script holds the
server long. Paused queues are the set ``P:paused``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.brokers.browse import DELETABLE, DeletableKind, Kind, Page, check_page, summarize
from celeriac.redisconn import decode

if TYPE_CHECKING:
    from celeriac.redisconn import Reconnector

#: Messages one admin script call handles when acting on all of a queue.
ADMIN_CHUNK = 2000


def _ms_or_none(value: Any) -> float | None:
    text = decode(value)
    return int(text) / 1000 if text else None


class RedisAdmin:
    """Mixed into :class:`~celeriac.brokers.redis.RedisBroker`."""

    if TYPE_CHECKING:
        prefix: str
        _retry: Reconnector
        _redis: Any

        def _run(self, name: str, args: Sequence[Any], *, retry: bool = True,
                 again: int | None = None) -> Any: ...

    def browse(self, queue: str, kind: Kind, *, offset: int = 0, limit: int = 50) -> Page:
        check_page(kind, offset, limit)
        reply = self._run("browse", [queue, kind, offset, limit])
        items = []
        for i in range(1, len(reply), 7):
            message_id, body, published, due, deliveries, reason, failed = reply[i:i + 7]
            failed_at = _ms_or_none(failed)
            items.append(summarize(
                decode(message_id), queue, bytes(body),
                enqueued_at=_ms_or_none(published) or failed_at or 0.0, due_at=_ms_or_none(due),
                deliveries=int(deliveries), reason=decode(reason) if kind == "dead" else None,
                failed_at=failed_at))
        return Page(items=items, total=int(reply[0]), offset=offset)

    def _act(self, action: str, queue: str, ids: Sequence[str] | None) -> int:
        if ids is not None:
            done = 0
            for start in range(0, len(ids), ADMIN_CHUNK):
                chunk = list(ids[start:start + ADMIN_CHUNK])
                if chunk:
                    done += int(self._run("admin", [action, queue, len(chunk), *chunk]))
            return done
        total = 0
        while True:
            done = int(self._run("admin", [action, queue, ADMIN_CHUNK]))
            total += done
            if done < ADMIN_CHUNK:
                return total

    def requeue_dead(self, queue: str, ids: Sequence[str] | None) -> int:
        return self._act("requeue", queue, ids)

    def delete_messages(self, queue: str, kind: DeletableKind,
                        ids: Sequence[str] | None) -> int:
        check_page(kind, 0, 0, DELETABLE)
        return self._act(f"delete:{kind}", queue, ids)

    def enqueue_now(self, queue: str, ids: Sequence[str]) -> int:
        return self._act("now", queue, ids) if ids else 0

    def pause(self, queue: str) -> None:
        self._retry.call(lambda: self._redis.sadd(f"{self.prefix}:paused", queue))

    def resume(self, queue: str) -> None:
        self._retry.call(lambda: self._redis.srem(f"{self.prefix}:paused", queue))

    def paused(self) -> set[str]:
        names = self._retry.call(lambda: self._redis.smembers(f"{self.prefix}:paused"))
        return {decode(name) for name in names}
