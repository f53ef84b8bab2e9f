"""Brokers, chosen by the scheme of the ``broker_url``.

Callers should only need :func:`broker_from_url` and the names re-exported from
:mod:`celeriac.brokers.base`. Built-in brokers that need nothing beyond the
standard library are registered in :data:`BROKERS` directly; brokers that need
a client library (redis, amqp) go in :data:`LAZY_BROKERS` as a
``"module:Class"`` path, so ``import celeriac`` never imports -- or requires --
a client the user does not use. The first use of such a scheme imports the
class and moves it into :data:`BROKERS` (:class:`celeriac.extras.SchemeRegistry`, the
lookup the result backends share).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celeriac.brokers.base import (
    COMMANDS_KEPT,
    Broker,
    ControlCommand,
    DeadLetter,
    Delivery,
    OutgoingMessage,
    QueueStats,
    Revocation,
    WorkerEvent,
    WorkerInfo,
)
from celeriac.brokers.browse import MessageSummary, Page
from celeriac.brokers.memory import MemoryBroker
from celeriac.brokers.sqlite import SQLiteBroker
from celeriac.extras import SchemeRegistry

__all__ = [
    "BROKERS",
    "COMMANDS_KEPT",
    "LAZY_BROKERS",
    "Broker",
    "ControlCommand",
    "DeadLetter",
    "Delivery",
    "MemoryBroker",
    "MessageSummary",
    "OutgoingMessage",
    "Page",
    "QueueStats",
    "Revocation",
    "SQLiteBroker",
    "WorkerEvent",
    "WorkerInfo",
    "broker_class",
    "broker_from_url",
    "known_schemes",
]

#: URL scheme -> broker class, for brokers that are already imported.
BROKERS: dict[str, type[Broker]] = {
    scheme: cls for cls in (MemoryBroker, SQLiteBroker) for scheme in cls.schemes
}

#: URL scheme -> ``"module:Class"`` of a broker imported on first use.
LAZY_BROKERS: dict[str, str] = {
    **{scheme: "celeriac.brokers.redis:RedisBroker" for scheme in ("redis", "rediss", "unix")},
    **{scheme: "celeriac.brokers.amqp:AmqpBroker" for scheme in ("amqp", "amqps", "pyamqp")},
}


_REGISTRY = SchemeRegistry("broker", BROKERS, LAZY_BROKERS)


def known_schemes() -> list[str]:
    """Every scheme :func:`broker_from_url` accepts, sorted."""
    return _REGISTRY.known_schemes()


def broker_class(scheme: str) -> type[Broker]:
    """The broker class serving ``scheme``, importing it if it is a lazy one."""
    return _REGISTRY.cls(scheme)


def broker_from_url(url: str, *, max_deliveries: int = 5, poll_interval: float = 0.05,
                    pool_limit: int = 32, reconnect_timeout: float | None = 20.0,
                    options: Mapping[str, Any] | None = None) -> Broker:
    """Build the broker for ``url`` (``memory://``, ``sqlite:///celeriac.db``, ``redis://``...).

    ``reconnect_timeout`` is how long a call waits out a lost connection before it
    raises :class:`~celeriac.exceptions.BrokerUnreachable` (None: forever).
    ``options`` are the settings only some transports use (:data:`~celeriac.brokers.base.OPTION_NAMES`).
    """
    broker = _REGISTRY.for_url(url)(url, max_deliveries=max_deliveries, poll_interval=poll_interval,
                                  pool_limit=pool_limit)
    broker.retry_for(reconnect_timeout)
    if options:
        broker.configure(options)
    return broker
