"""What ``celeriac worker`` is asked to run: pool groups and node-wide options.

A node runs one or more *pool groups* under one supervisor. ``-P`` takes
``NAME[:CONCURRENCY[:QUEUES]]`` and may be repeated::

    celeriac -A tasks worker -P gevent -c 1000 -Q io        # one group
    celeriac -A tasks worker -P gevent:1000:io -P prefork:2:cpu

A group without queues serves ``-Q`` (or the default queue). Every group also
serves its pool's own queue, ``<task_default_queue>.<pool>`` (``celery.gevent``,
``celery.prefork``), where ``@app.task(pool="...")`` routes tasks that need that
kind of pool; see :meth:`celeriac.app.Celeriac.route`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celeriac.exceptions import ConfigurationError


@dataclass(frozen=True)
class PoolGroup:
    """One pool of a node: ``-P gevent:1000:io`` is ``PoolGroup("gevent", 1000, ["io"])``."""

    pool: str
    concurrency: int
    queues: list[str]
    processes: int | None = None


@dataclass(frozen=True)
class WorkerOptions:
    """What ``celeriac worker`` was asked to run: one or more pool groups."""

    app: str
    groups: list[PoolGroup]
    node: str = ""
    loglevel: str = "INFO"
    prefetch_multiplier: int = 4
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    shutdown_timeout: float = 30.0
    settings: dict[str, Any] = field(default_factory=dict)
    #: ``--logfile``: where the supervisor and every worker process log, with Celery's
    #: ``%n``/``%i``... abbreviations (:func:`celeriac.worker.nodenames.node_format`);
    #: None logs to stderr.
    logfile: str | None = None
    #: False with ``--without-heartbeat``: no ``worker-heartbeat`` events and no
    #: ``heartbeat_sent`` signal. The node's heartbeat *record* in the broker stays:
    #: ``status``, remote control and the recovery of a vanished node's messages need it.
    heartbeat_events: bool = True
    #: ``--autoscale MAX,MIN`` as ``(MAX, MIN)`` (celeriac.worker.autoscale); None without it.
    autoscale: tuple[int, int] | None = None


def pool_queue(default_queue: str, pool: str) -> str:
    """The queue where tasks that ask for ``pool`` are routed: ``celery.gevent``."""
    return f"{default_queue}.{pool}"


def parse_groups(values: Sequence[str], *, concurrency: int, processes: int | None,
                 queues: list[str], default_queue: str,
                 exclude: Sequence[str] = ()) -> list[PoolGroup]:
    """Turn ``-P`` values into pool groups (``-c``/``-Q`` fill what a value leaves out).

    ``exclude`` (``-X``) is taken out of every group's queues last, pool queues
    included, so ``-X`` means what Celery's does: every queue the worker would
    consume except these. A group left with no queue is an error, not a pool that
    idles.
    """
    from celeriac.pools import get_pool

    groups = []
    for value in values:
        name, _, rest = value.partition(":")
        count, _, queue_list = rest.partition(":")
        get_pool(name)
        try:
            size = int(count) if count else concurrency
        except ValueError:
            raise ConfigurationError(
                f"-P {value!r}: concurrency {count!r} is not a number "
                "(use NAME[:CONCURRENCY[:QUEUE,QUEUE]], e.g. gevent:1000:io)") from None
        if size < 1:
            raise ConfigurationError(f"-P {value!r}: concurrency must be at least 1")
        served = [q.strip() for q in queue_list.split(",") if q.strip()] or list(queues)
        own = pool_queue(default_queue, name)
        consumed = [q for q in ([*served, own] if own not in served else served)
                    if q not in exclude]
        if not consumed:
            raise ConfigurationError(
                f"-X {','.join(exclude)} excludes every queue of pool {value!r} "
                f"({', '.join([*served, own])}): it would have nothing to consume")
        groups.append(PoolGroup(name, size, consumed, processes))
    return groups
