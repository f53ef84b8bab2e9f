"""The RabbitMQ broker's state store, and the Broker methods it leaves to it unchanged.

Workers, events, revocations, control, replies, limits and metric rollups need a key-value store with
expiry, capped logs with cursors and compare-and-set, which RabbitMQ does not have;
the Redis and SQLite brokers already keep them, proven by the same contract suite, so
the AMQP broker hands these calls to one of them (``broker_state_url``), which also
keeps the AMQP broker's own records (:mod:`celeriac.brokers.amqp.state`) and the beat
outbox (:mod:`celeriac.brokers.amqp.outbox`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from celeriac.brokers.amqp.outbox import Outbox
from celeriac.brokers.amqp.state import AmqpState, state_for
from celeriac.brokers.base import (
    Broker,
    ControlCommand,
    OutgoingMessage,
    Revocation,
    WorkerEvent,
    WorkerInfo,
    check_priority,
)
from celeriac.brokers.metrics import MetricRow
from celeriac.exceptions import ConfigurationError
from celeriac.validators import STATE_SCHEMES

T = TypeVar("T")


class InStateStore(Broker):
    """Builds the state store on first use and delegates the non-queue methods to it.

    The store's URL is, first found: the broker URL's ``state_url`` query parameter
    (removed from the URL the rest of the broker sees: ``_base_url``), the
    ``state_url`` option (``broker_state_url``), the ``result_backend`` option when it
    is a Redis or SQLite URL.
    """

    def __init__(self, url: str, *, max_deliveries: int = 5, poll_interval: float = 0.05,
                 pool_limit: int = 32) -> None:
        super().__init__(url, max_deliveries=max_deliveries, poll_interval=poll_interval,
                         pool_limit=pool_limit)
        parts = urlparse(url)
        query = dict(parse_qsl(parts.query))
        self._url_state = query.pop("state_url", None)
        self._base_url = urlunparse(parts._replace(query=urlencode(query)))
        self._options: dict[str, Any] = {}
        self._patience: float | None = 20.0
        self._store_broker: Broker | None = None
        self._state: AmqpState | None = None
        self._outbox: Outbox | None = None

    @abstractmethod
    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """(The outbox relays beat messages through it.)"""

    def configure(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)

    def retry_for(self, seconds: float | None) -> None:
        self._patience = seconds
        if self._store_broker is not None:
            self._store_broker.retry_for(seconds)

    @property
    def store(self) -> Broker:
        """The state store (built on first use): a Redis or SQLite broker."""
        if self._store_broker is None:
            from celeriac.brokers import broker_from_url

            url = self._state_url()
            self._store_broker = broker_from_url(
                url, max_deliveries=self.max_deliveries, poll_interval=self.poll_interval,
                pool_limit=self.pool_limit, reconnect_timeout=self._patience)
            self._state = state_for(self._store_broker)
            self._outbox = Outbox(self._store_broker, self.publish)
        return self._store_broker

    @property
    def state(self) -> AmqpState:
        self.store  # noqa: B018 - builds it
        assert self._state is not None
        return self._state

    def _state_url(self) -> str:
        url = self._url_state or self._options.get("state_url")
        if not url:
            backend = str(self._options.get("result_backend") or "")
            if urlparse(backend).scheme in STATE_SCHEMES:
                url = backend
        if not url:
            raise ConfigurationError(
                "the RabbitMQ broker needs a state store for what RabbitMQ cannot keep "
                "(workers, events, control, revocations, beat, rate limits, delivery counts): "
                "set broker_state_url to a redis:// or sqlite:// URL (or use a Redis or "
                "SQLite result backend, which it then shares)")
        if urlparse(str(url)).scheme not in STATE_SCHEMES:
            raise ConfigurationError(f"broker_state_url must be a redis:// or sqlite:// URL, "
                                     f"got {url!r}")
        return str(url)

    def _store_ready(self) -> bool:
        """Whether a state store is configured (a producer may run without one)."""
        try:
            self.store  # noqa: B018 - builds it
        except ConfigurationError:
            return False
        return True

    def _in_store(self, call: Callable[[Broker], T]) -> T:
        store = self.store
        store.events_kept, store.commands_kept = self.events_kept, self.commands_kept
        store.metrics_retention = self.metrics_retention
        return call(store)

    def heartbeat(self, worker: str, info: dict[str, Any], ttl: float) -> None:
        self._in_store(lambda s: s.heartbeat(worker, info, ttl))
        self._relay()

    def _relay(self) -> None:
        assert self._outbox is not None
        self._outbox.relay()

    def beat_claim(self, name: str, previous: float | None, run_at: float,
                   messages: Sequence[OutgoingMessage]) -> bool:
        for message in messages:
            check_priority(message)
        self.store  # noqa: B018 - builds the outbox
        assert self._outbox is not None
        return self._outbox.claim(name, previous, run_at, messages)


    def forget_worker(self, worker: str) -> None:
        self._in_store(lambda s: s.forget_worker(worker))

    def workers(self) -> list[WorkerInfo]:
        return self._in_store(lambda s: s.workers())

    def reap_workers(self) -> list[WorkerInfo]:
        return self._in_store(lambda s: s.reap_workers())

    def emit(self, events: Sequence[WorkerEvent]) -> None:
        self._in_store(lambda s: s.emit(events))

    def emit_encoded(self, lines: Sequence[bytes]) -> None:
        self._in_store(lambda s: s.emit_encoded(lines))

    def events(self, after: int = 0, limit: int = 100) -> list[WorkerEvent]:
        return self._in_store(lambda s: s.events(after, limit))

    def newest_event_seq(self) -> int:
        return self._in_store(lambda s: s.newest_event_seq())

    def events_of(self, task_id: str, after: int, until: int) -> list[WorkerEvent]:
        return self._in_store(lambda s: s.events_of(task_id, after, until))

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

    def record_metrics(self, rows: Sequence[MetricRow]) -> None:
        if rows:
            self._in_store(lambda s: s.record_metrics(rows))

    def metrics(self, since: float, until: float, task: str | None = None, *,
                step: int = 60) -> list[MetricRow]:
        return self._in_store(lambda s: s.metrics(since, until, task, step=step))
