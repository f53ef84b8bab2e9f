"""The send options past the common ones: custom headers, shadow names, Celery's
routing keys and exchanges, publish retries, and the kombu options celeriac refuses.

``apply_async`` takes them with Celery's meaning (docs/migrating.md "Send options").
They are rare, so the common send pays one test for all of them
(:meth:`celeriac.app.Celeriac._prepare`) and everything else happens here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celeriac.context import PROTOCOL_HEADERS
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.message import Envelope

log = logging.getLogger("celeriac.send")

#: Exchange names that mean "no exchange of its own" on celeriac's brokers: kombu's
#: default direct exchange ("") and Celery's ``task_default_exchange`` ("celery"),
#: where the routing key is the queue name, as with Celery's Redis transport.
DEFAULT_EXCHANGES = frozenset({"", "celery"})

#: ``apply_async`` options Celery documents that celeriac refuses, with why: an
#: error that says so, rather than "unknown option".
REFUSED = {
    "producer": "celeriac has no kombu producers: every send uses the app's broker connection",
    "publisher": "celeriac has no kombu producers (publisher is Celery's old name for producer)",
    "connection": "celeriac has no kombu connections: every send uses the app's broker "
                  "connection (set broker_url to choose it)",
    "delivery_mode": "an AMQP message property: celeriac's brokers always store messages "
                     "durably (AMQP is issue 12)",
    "mandatory": "an AMQP publish flag, with no meaning without AMQP exchanges (issue 12)",
    "immediate": "an AMQP publish flag RabbitMQ removed, with no meaning without AMQP (issue 12)",
    "correlation_id": "the message's correlation_id is its task id (protocol v2): set task_id",
}


def refusal(key: str, where: str) -> UnknownSettingError | None:
    """The error for an option Celery documents and celeriac refuses, else None."""
    why = REFUSED.get(key)
    return None if why is None else UnknownSettingError(f"option {key!r} of {where} is not "
                                                        f"supported: {why}")


def routed_queue(queue: str | None, routing_key: str | None, exchange: Any,
                 where: str = "apply_async") -> str | None:
    """The queue a ``routing_key``/``exchange`` pair names, with Celery's Redis meaning:
    on the default direct exchange the routing key is the queue's name. ``queue``
    wins when given (Celery then uses the key only with topic exchanges). Any other
    exchange is refused: celeriac has none until AMQP (issue 12)."""
    name = getattr(exchange, "name", exchange)  # a kombu Exchange object too
    if name is not None and name not in DEFAULT_EXCHANGES:
        raise ConfigurationError(
            f"{where}: exchange={name!r}: celeriac's brokers have no exchanges (AMQP is "
            f"issue 12); only the default one ('' or 'celery') is accepted, where the "
            f"routing key is the queue name")
    if queue:
        return queue
    if routing_key is not None and (not isinstance(routing_key, str) or not routing_key):
        raise ConfigurationError(f"{where}: routing_key={routing_key!r}: must be a queue name")
    return routing_key


def checked_headers(headers: Any) -> dict[str, Any]:
    """``headers=`` as a dict of custom headers. A protocol header (``id``, ``eta``...)
    is refused: Celery lets it override the message's own, which silently breaks
    the message; the option of that name sets it (``task_id=``, ``countdown=``)."""
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"headers={headers!r}: must be a dict of custom headers")
    clash = sorted(key for key in headers if key in PROTOCOL_HEADERS)
    if clash:
        raise ConfigurationError(
            f"headers: {', '.join(map(repr, clash))} {'is a' if len(clash) == 1 else 'are'} "
            f"task protocol header{'s' if len(clash) > 1 else ''}, set from the send options "
            f"(task_id=, countdown=, shadow=...), not a custom one")
    for key in headers:
        if not isinstance(key, str):
            raise ConfigurationError(f"headers: key {key!r} must be a string")
    return dict(headers)


def add_extras(envelope: Envelope, headers: Mapping[str, Any] | None, shadow: str | None,
               reply_to: str | None) -> None:
    """Put ``headers``, ``shadow`` and ``reply_to`` into a built message (before the
    ``before_task_publish`` hooks, which may still change them)."""
    if headers:
        envelope.headers.update(checked_headers(headers))
    if shadow is not None:
        if not isinstance(shadow, str):
            raise ConfigurationError(f"shadow={shadow!r}: must be a task name string")
        envelope.headers["shadow"] = shadow
    if reply_to is not None:
        if not isinstance(reply_to, str):
            raise ConfigurationError(f"reply_to={reply_to!r}: must be a string")
        envelope.properties["reply_to"] = reply_to


_RETRY_NOTED: list[bool] = []


def note_publish_retry(retry: bool | None, retry_policy: Mapping[str, Any] | None) -> None:
    """``retry``/``retry_policy`` are accepted and not acted on: every celeriac producer
    waits out a lost broker connection for ``broker_reconnect_timeout`` seconds, then
    raises ``BrokerUnreachable``. Said once per process, in a log line."""
    if retry_policy is not None and not isinstance(retry_policy, Mapping):
        raise ConfigurationError(f"retry_policy={retry_policy!r}: must be a dict "
                                 "(max_retries, interval_start, interval_step, interval_max)")
    if (retry is None and retry_policy is None) or _RETRY_NOTED:
        return
    _RETRY_NOTED.append(True)
    log.warning("apply_async(retry=..., retry_policy=...) is accepted and not acted on: "
                "celeriac producers wait out a lost broker connection for "
                "broker_reconnect_timeout seconds, then raise BrokerUnreachable")
