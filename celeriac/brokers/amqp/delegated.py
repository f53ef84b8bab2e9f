"""The Broker methods the RabbitMQ broker leaves to its state store, unchanged.

Workers, events, revocations, control, replies and limits need a key-value store with
expiry, capped logs with cursors and compare-and-set, which RabbitMQ does not have;
the Redis and SQLite brokers already keep them, proven by the same contract suite, so
the AMQP broker hands these calls to one of them (``broker_state_url``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from celeriac.brokers.base import (
    Broker,
    ControlCommand,
    Revocation,
    WorkerEvent,
    WorkerInfo,
)

T = TypeVar("T")


class InStateStore(Broker):
    """Delegates the non-queue Broker methods to ``_in_store``'s broker."""

    @abstractmethod
    def _in_store(self, call: Callable[[Broker], T]) -> T:
        """``call(state store)``, with this broker's caps copied onto the store."""

    def forget_worker(self, worker: str) -> None:
        self._in_store(lambda s: s.forget_worker(worker))

    def workers(self) -> list[WorkerInfo]:
        return self._in_store(lambda s: s.workers())

    def reap_workers(self) -> list[WorkerInfo]:
        return self._in_store(lambda s: s.reap_workers())

    def emit(self, events: Sequence[WorkerEvent]) -> None:
        self._in_store(lambda s: s.emit(events))

    def events(self, after: int = 0, limit: int = 100) -> list[WorkerEvent]:
        return self._in_store(lambda s: s.events(after, limit))

    def revoke(self, revocations: Sequence[Revocation]) -> None:
        self._in_store(lambda s: s.revoke(revocations))

    def revocations(self, after: int = 0, limit: int = 1000) -> list[Revocation]:
        return self._in_store(lambda s: s.revocations(after, limit))

    def broadcast(self, body: dict[str, Any]) -> int:
        return self._in_store(lambda s: s.broadcast(body))

    def commands(self, after: int, limit: int = 100) -> list[ControlCommand]:
        return self._in_store(lambda s: s.commands(after, limit))

    def command_cursor(self) -> int:
        return self._in_store(lambda s: s.command_cursor())

    def reply(self, reply_to: str, body: dict[str, Any], ttl: float = 60.0) -> None:
        self._in_store(lambda s: s.reply(reply_to, body, ttl))

    def replies(self, reply_to: str, *, timeout: float,
                count: int | None = None) -> list[dict[str, Any]]:
        return self._in_store(lambda s: s.replies(reply_to, timeout=timeout, count=count))

    def beat_runs(self, names: Sequence[str]) -> dict[str, float]:
        return self._in_store(lambda s: s.beat_runs(names))

    def take_rate_token(self, task: str, rate: float, burst: int, ticket: str) -> float:
        return self._in_store(lambda s: s.take_rate_token(task, rate, burst, ticket))

    def acquire_slot(self, task: str, limit: int, holder: str, ttl: float) -> bool:
        return self._in_store(lambda s: s.acquire_slot(task, limit, holder, ttl))

    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        self._in_store(lambda s: s.renew_slots(slots, ttl))

    def release_slot(self, task: str, holder: str) -> None:
        self._in_store(lambda s: s.release_slot(task, holder))

    def slots_in_use(self, task: str) -> int:
        return self._in_store(lambda s: s.slots_in_use(task))

    def set_rate_limit(self, task: str, rate: str) -> None:
        self._in_store(lambda s: s.set_rate_limit(task, rate))

    def rate_limits(self) -> dict[str, str]:
        return self._in_store(lambda s: s.rate_limits())
