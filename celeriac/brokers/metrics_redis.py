"""Metric rollups in Redis (see :mod:`celeriac.brokers.metrics`).

A mixin of :class:`celeriac.brokers.redis.RedisBroker`. One hash per minute,
``P:mx:<minute>``, maps each task name (and ``''``, the minute's total) to the row's
text form (:func:`~celeriac.brokers.metrics.encode`). A write is one script call
(``lua/metrics.lua``) that adds the rows to the stored ones on the server, so the
rows of many processes add up atomically, and sets each hash to expire when its
minute leaves the retention: Redis deletes old rows itself. A read is one pipeline
of one ``HGETALL`` (every task) or ``HGET`` (one task, or the totals) per minute of
the span.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.brokers.ids import MessageIds
from celeriac.brokers.metrics import (
    ALL_TASKS,
    MAX_TASK_NAMES,
    OTHER_TASKS,
    MetricRow,
    decode,
    encode,
    minute_span,
    with_totals,
)
from celeriac.redisconn import decode as text

if TYPE_CHECKING:
    import redis

    from celeriac.redisconn import Reconnector

#: How long the receipt of a write is kept: a retry within it adds nothing twice.
RECEIPT_TTL_MS = 120_000

_receipts = MessageIds()


class RedisMetrics:
    """``record_metrics`` and ``metrics`` on the Redis broker's server."""

    if TYPE_CHECKING:
        prefix: str
        metrics_retention: float
        _redis: redis.Redis
        _retry: Reconnector

        def _run(self, name: str, args: Sequence[Any], *, retry: bool = True,
                 again: int | None = None) -> Any: ...

    def record_metrics(self, rows: Sequence[MetricRow]) -> None:
        if not rows:
            return
        args: list[Any] = [_receipts.take(1)[0], RECEIPT_TTL_MS, "0",
                           int(self.metrics_retention), MAX_TASK_NAMES, OTHER_TASKS, ALL_TASKS]
        for row in with_totals(rows):
            args += (row.minute, row.task, encode(row))
        self._run("metrics", args, again=2)

    def metrics(self, since: float, until: float, task: str | None = None) -> list[MetricRow]:
        span = minute_span(since, until, time.time(), self.metrics_retention)
        if not span:
            return []

        def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for minute in span:
                name = f"{self.prefix}:mx:{minute}"
                if task is None:
                    pipe.hgetall(name)
                else:
                    pipe.hget(name, task)
            return list(pipe.execute())

        found: list[MetricRow] = []
        for minute, reply in zip(span, self._retry.call(read), strict=True):
            if task is None:
                rows = {text(name): text(value) for name, value in reply.items()}
                found.extend(decode(minute, name, rows[name]) for name in sorted(rows)
                             if name != ALL_TASKS)
            elif reply is not None:
                found.append(decode(minute, task, text(reply)))
        return found
