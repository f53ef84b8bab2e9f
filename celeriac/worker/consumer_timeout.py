"""On RabbitMQ, the server's ``consumer_timeout`` bounds every hard time limit.

RabbitMQ closes the channel of a delivery left unacked for longer than its
``consumer_timeout``, and every other delivery of that channel (the whole process's)
goes back with it. AMQP has no way to extend a delivery or hand it over while its
task runs, so a task must end within that time, less a margin of two lease timeouts
(the margin the broker's lease sweep and a late renewal need). The server's value
cannot be read over AMQP: ``broker_consumer_timeout`` says it.

So a worker on RabbitMQ refuses to start with a hard limit above the bound, runs
with the bound as its hard limit when none is set (a task that overran it would
otherwise cost its neighbours their deliveries), and fails at receipt a task whose
own ``time_limit`` is longer, rather than run it into a closed channel.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from celeriac.exceptions import ConfigurationError
from celeriac.settings import Settings
from celeriac.validators import AMQP_SCHEMES

log = logging.getLogger("celeriac.supervisor")


def limit_bound(conf: Settings) -> float | None:
    """The longest hard time limit the broker allows, in seconds; None unless RabbitMQ."""
    if urlparse(conf.broker_url).scheme not in AMQP_SCHEMES:
        return None
    return float(conf.broker_consumer_timeout - 2 * conf.broker_lease_timeout)


def checked_hard_limit(limit: float | None, consumer_timeout: float,
                       lease_timeout: float) -> float:
    """The hard limit a worker on RabbitMQ runs with: ``limit``, or the bound when None.

    Raises :class:`ConfigurationError`, naming the values and the fixes, when ``limit``
    is above ``consumer_timeout - 2 * lease_timeout`` or that leaves no time at all.
    """
    bound = consumer_timeout - 2 * lease_timeout
    where = (f"broker_consumer_timeout={consumer_timeout:g}s minus 2 x "
             f"broker_lease_timeout={lease_timeout:g}s")
    fix = ("raise consumer_timeout in rabbitmq.conf (RabbitMQ 3.12+: or a consumer-timeout "
           "policy) and set broker_consumer_timeout to the server's value")
    if bound <= 0:
        raise ConfigurationError(f"RabbitMQ leaves a task no time: {where} is {bound:g}s; {fix}, "
                                 "or lower broker_lease_timeout")
    if limit is not None and limit > bound:
        raise ConfigurationError(
            f"task_time_limit={limit:g}s is longer than RabbitMQ lets a delivery stay unacked: "
            f"{where} = {bound:g}s (the server closes the channel of an older delivery, "
            f"with every other delivery of the process). Lower task_time_limit (--time-limit) "
            f"to at most {bound:g}, or {fix}")
    return bound if limit is None else limit


def worker_hard_limit(conf: Settings, limit: float | None) -> float | None:
    """At worker start: the hard limit to give the worker processes on RabbitMQ (checked
    by :func:`checked_hard_limit`; the bound, logged, when ``limit`` is None), or None
    on another broker. Also says when AMQP heartbeats are off."""
    if limit_bound(conf) is None:
        return None
    effective = checked_hard_limit(limit, conf.broker_consumer_timeout, conf.broker_lease_timeout)
    if limit is None:
        log.info("no task_time_limit: tasks get a hard time limit of %gs, RabbitMQ's "
                 "consumer_timeout (broker_consumer_timeout=%gs) less 2 x broker_lease_timeout; "
                 "a task running longer would lose its process's channel", effective,
                 conf.broker_consumer_timeout)
    if not conf.broker_heartbeat:
        log.info("broker_heartbeat is off: a dead RabbitMQ connection is noticed only by TCP")
    return effective


def over_bound(limit: float | None, bound: float | None) -> str | None:
    """Why a task with hard limit ``limit`` cannot run under ``bound``, or None if it can."""
    if bound is None or limit is None or limit <= bound:
        return None
    return (f"its hard time limit ({limit:g}s) is longer than RabbitMQ lets a delivery stay "
            f"unacked here ({bound:g}s: broker_consumer_timeout less 2 x broker_lease_timeout); "
            "lower the task's time_limit or raise the server's consumer_timeout")
