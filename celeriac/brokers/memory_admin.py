"""The memory broker's read model and admin actions for dashboards.

A mixin of :class:`celeriac.brokers.memory.MemoryBroker`. The memory broker serves
tests and single-process apps, so its listings sort the queue's messages on each
call (O(n log n)) rather than keep more indexes on every publish and claim; the
shared brokers (SQLite, Redis) page from indexes.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from celeriac.brokers.base import DeadLetter, OutgoingMessage, QueueStats
from celeriac.brokers.browse import (
    DELETABLE,
    DeletableKind,
    Kind,
    MessageSummary,
    Page,
    check_page,
    summarize,
)

if TYPE_CHECKING:
    from celeriac.brokers.memory import _Message


class MemoryAdmin:
    """Mixed into :class:`~celeriac.brokers.memory.MemoryBroker`."""

    if TYPE_CHECKING:
        _lock: threading.Lock
        _arrived: threading.Condition
        _messages: dict[int, _Message]
        _queues: set[str]
        _dead: list[DeadLetter]
        _dead_meta: dict[str, tuple[float, int]]
        _paused: set[str]

        def _place(self, message: _Message, now: float) -> None: ...

        def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]: ...

    def _delayed_listing(self, queue: str, kind: str, now: float) -> list[_Message]:
        """The queue's scheduled messages or retries (``kind``), due first."""
        retry = kind == "retries"
        found = [m for m in self._messages.values()
                 if m.queue == queue and m.consumer is None and m.available_at > now
                 and m.retry == retry]
        return sorted(found, key=lambda m: (m.available_at, m.id))

    def _ready_listing(self, queue: str, now: float) -> list[_Message]:
        found = [m for m in self._messages.values()
                 if m.queue == queue and m.available_at <= now]
        return sorted(found, key=lambda m: (-m.priority, m.available_at, m.id))

    def _dead_of(self, queue: str) -> Iterable[DeadLetter]:
        return (d for d in reversed(self._dead) if d.queue == queue)

    def browse(self, queue: str, kind: Kind, *, offset: int = 0, limit: int = 50) -> Page:
        check_page(kind, offset, limit)
        with self._lock:
            now = time.time()
            items: list[MessageSummary] = []
            if kind == "dead":
                letters = list(self._dead_of(queue))
                for d in letters[offset:offset + limit]:
                    items.append(summarize(d.id, queue, d.body,
                                           enqueued_at=self._dead_meta.get(d.id, (0.0, 0))[0],
                                           deliveries=d.delivery_count, reason=d.reason,
                                           failed_at=d.failed_at))
                return Page(items=items, total=len(letters), offset=offset)
            listed = (self._ready_listing(queue, now) if kind == "ready"
                      else self._delayed_listing(queue, kind, now))
            for m in listed[offset:offset + limit]:
                items.append(summarize(str(m.id), queue, m.body, enqueued_at=m.published_at,
                                       due_at=None if kind == "ready" else m.available_at,
                                       deliveries=m.delivery_count))
            return Page(items=items, total=len(listed), offset=offset)

    def stats(self) -> dict[str, QueueStats]:
        with self._lock:
            now = time.time()
            result = {queue: QueueStats(paused=queue in self._paused) for queue in self._queues}
            oldest: dict[str, float] = {}
            for message in self._messages.values():
                counts = result[message.queue]
                if message.available_at <= now:
                    counts.ready += 1
                    oldest[message.queue] = min(oldest.get(message.queue, now),
                                                message.available_at)
                elif message.consumer is None:
                    counts.scheduled += 1
                else:
                    counts.in_flight += 1
            for dead in self._dead:
                result.setdefault(dead.queue, QueueStats()).dead += 1
            for queue, since in oldest.items():
                result[queue].oldest_age = now - since
            return result

    def _take_dead(self, queue: str, ids: Sequence[str] | None
                   ) -> list[tuple[DeadLetter, int]]:
        """Remove dead letters of ``queue`` (``ids``, or all); each with its priority.
        Call with the lock held."""
        wanted = None if ids is None else set(ids)
        taken = [d for d in self._dead
                 if d.queue == queue and (wanted is None or d.id in wanted)]
        if taken:
            gone = {id(d) for d in taken}
            self._dead[:] = [d for d in self._dead if id(d) not in gone]
        return [(d, self._dead_meta.pop(d.id, (0.0, 0))[1]) for d in taken]

    def requeue_dead(self, queue: str, ids: Sequence[str] | None) -> int:
        with self._lock:
            taken = self._take_dead(queue, ids)
        # Published as new messages: ready now, no deliveries counted.
        self.publish([OutgoingMessage(queue, d.body, priority=p) for d, p in taken])
        return len(taken)

    def delete_messages(self, queue: str, kind: DeletableKind,
                        ids: Sequence[str] | None) -> int:
        check_page(kind, 0, 0, DELETABLE)
        with self._lock:
            if kind == "dead":
                return len(self._take_dead(queue, ids))
            wanted = None if ids is None else set(ids)
            doomed = [m for m in self._delayed_listing(queue, kind, time.time())
                      if wanted is None or str(m.id) in wanted]
            for message in doomed:
                del self._messages[message.id]  # its heap entry is dropped when it surfaces
            return len(doomed)

    def enqueue_now(self, queue: str, ids: Sequence[str]) -> int:
        wanted = set(ids)
        with self._lock:
            now = time.time()
            chosen = [m for m in itertools.chain(self._delayed_listing(queue, "scheduled", now),
                                                 self._delayed_listing(queue, "retries", now))
                      if str(m.id) in wanted]
            for message in chosen:
                message.available_at = now
                self._place(message, now)
            if chosen:
                self._arrived.notify_all()
            return len(chosen)

    def pause(self, queue: str) -> None:
        with self._lock:
            self._paused.add(queue)

    def resume(self, queue: str) -> None:
        with self._lock:
            self._paused.discard(queue)

    def paused(self) -> set[str]:
        with self._lock:
            return set(self._paused)


