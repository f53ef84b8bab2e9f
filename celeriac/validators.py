"""The validators of the settings registry (:mod:`celeriac.settings`) and the value lists
they check against: each takes a setting's raw value (from ``app.conf``, the environment
or the command line) and returns it normalised, or raises :class:`ConfigurationError`
naming what was wrong."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from celeriac import compression
from celeriac.exceptions import ConfigurationError

Validator = Callable[[Any], Any]


def _zone(value: Any) -> str | None:
    """Celery's ``timezone``: None (UTC) or an IANA zone name, which crontabs are read in.

    A naive ``eta``/``expires`` stays UTC whatever the zone (docs/migrating.md says why)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError("must be an IANA time zone name such as 'Europe/London', or None")
    from celeriac.schedules import zone

    try:
        zone(value)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None
    return value


def _beat_schedule(value: Any) -> dict[str, Any]:
    """Celery's ``beat_schedule``: every entry checked now (:mod:`celeriac.beat.entries`),
    so a typo stops the app at configuration rather than at the beat's first tick."""
    from celeriac.beat.entries import check_schedule

    return check_schedule(value)


def _beat_scheduler(value: Any) -> str:
    if value not in BEAT_SCHEDULERS:
        raise ValueError("celeriac's beat keeps its state in the broker (highly available); "
                         "another scheduler class cannot replace it: leave the setting out or "
                         f"use {BEAT_SCHEDULERS[0]!r}")
    return str(value)


#: Celery's default ``beat_scheduler`` and celeriac's name for its own: both mean the beat in
#: :mod:`celeriac.beat`.
BEAT_SCHEDULERS = ("celery.beat:PersistentScheduler", "celeriac.beat:Beat")


def _true_only(value: Any) -> bool:
    if value is not True:
        raise ValueError("celeriac keeps times in UTC: only True is accepted")
    return True


def _json_only(value: Any) -> str:
    if value not in ("json", "application/json"):
        raise ValueError("results are stored as JSON (with kombu's type markers): only 'json'")
    return "json"


def _compression(value: Any) -> str | None:
    return compression.checked(value)


def _no_result_compression(value: Any) -> None:
    if value is not None:
        raise ValueError("results are stored uncompressed: one JSON record per task, which "
                         "every reader of the backend reads as it is; compress a large result "
                         "in the task instead")


def _with_json(value: Any) -> list[str]:
    names = _str_list(value)
    if not {"json", "application/json"} & set(names):
        raise ValueError("results are stored as JSON: the list must contain 'json'")
    return names


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return value.lower() in {"1", "true", "yes", "on"}
    raise ValueError("must be a boolean")


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be an integer >= 1")
    return number


def _port(value: Any) -> int:
    """A TCP port, 0 meaning one the system picks (tests, ``--port 0``)."""
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a TCP port (0-65535)")
    return number


def _optional(inner: Validator) -> Validator:
    def check(value: Any) -> Any:
        return None if value is None or value == "" else inner(value)

    return check


def _positive_float(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a number > 0")
    return number


def _non_negative_float(value: Any) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must be a number >= 0")
    return number


def _priority(value: Any) -> int:
    number = int(value)
    if not 0 <= number <= 9:
        raise ValueError("must be an integer from 0 to 9")
    return number


#: RabbitMQ's queue types celeriac declares (the values of Celery's task_default_queue_type).
QUEUE_TYPES = ("quorum", "classic")
#: URL schemes of the RabbitMQ broker, which the settings marked "RabbitMQ" are for
#: (``pyamqp`` is Celery's name for the same client).
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
#: Schemes of the URLs a RabbitMQ broker can keep its state in (``broker_state_url``).
STATE_SCHEMES = ("redis", "rediss", "unix", "sqlite")


def _queue_type(value: Any) -> str:
    if value not in QUEUE_TYPES:
        raise ValueError("must be 'quorum' or 'classic'")
    return str(value)


def _state_url(value: Any) -> str:
    if _str(value).partition("://")[0] not in STATE_SCHEMES:
        raise ValueError("must be a redis://, rediss://, unix:// or sqlite:// URL, or None")
    return str(value)


def _use_ssl(value: Any) -> bool | dict[str, Any]:
    """Celery's ``broker_use_ssl``: a switch, or the ssl options themselves (a mapping)."""
    return dict(value) if isinstance(value, Mapping) else _bool(value)


def _max_priority(value: Any) -> int:
    number = int(value)
    if not 1 <= number <= 255:  # RabbitMQ's range for x-max-priority
        raise ValueError("must be an integer from 1 to 255, or None")
    return number


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return list(value)


def _module_list(value: Any) -> list[str]:
    if isinstance(value, str):  # one module, or several separated by commas (environment style)
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple | set | frozenset) or not all(
            isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of module names")
    return list(value)


def _log_format(value: Any) -> str:
    """A %-style log format, checked as the worker's ``logging.Formatter`` will check it."""
    text = _str(value)
    logging.Formatter(text)  # ValueError for a format that names no field
    return text


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping")
    return dict(value)


def _serializer(value: Any) -> str:
    """A registered serializer's name: json, pickle, or one added with
    :func:`celeriac.serialization.register` (before the setting is set)."""
    from celeriac import serialization

    known = serialization.names()
    if not isinstance(value, str) or value not in known:
        reason = serialization.missing(value) if isinstance(value, str) else None
        raise ValueError(reason or f"must be a registered serializer: {', '.join(known)}")
    return value


#: Celery's default ``worker_autoscaler``, and celeriac's own name for what it means.
AUTOSCALER = "celery.worker.autoscale:Autoscaler"
OWN_AUTOSCALER = "celeriac.worker.autoscale:Autoscaler"


def _autoscaler(value: Any) -> str:
    if value not in (AUTOSCALER, OWN_AUTOSCALER):
        raise ValueError("celeriac's autoscaler is built in and a class of your own cannot "
                         "replace it, since Celery's Autoscaler API (a thread driving a billiard "
                         f"pool) does not exist here: use {AUTOSCALER!r} or leave it out")
    return str(value)
