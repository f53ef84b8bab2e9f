"""Metric rollups in Redis (see :mod:`celeriac.brokers.metrics`).

A mixin of :class:`celeriac.brokers.redis.RedisBroker`. One hash per minute,
``P:mx:<minute>``, and one per hour, ``P:mxh:<hour>``, map each task name (and ``''``,
the period's total) to the row's text form (:func:`~celeriac.brokers.metrics.encode`).
A write is one script call (``lua/metrics.lua``) that adds the rows to the stored
ones on the server, so the rows of many processes add up atomically, and sets each
hash to expire when its period leaves the retention: Redis deletes old rows itself. A read is one script call
(``lua/metrics_read.lua``) that runs one ``HGETALL`` (every task) or ``HGET`` (one
task, or the totals) per period of the span on the server.
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
    span,
    stored_rows,
)
from celeriac.redisconn import decode as text

#: How long the receipt of a write is kept: a retry within it adds nothing twice.
RECEIPT_TTL_MS = 120_000

_receipts = MessageIds()

#: The key of a period's hash (under the prefix, then ``:<start>``), by step.
KEYS = {60: "mx", 3600: "mxh"}


class RedisMetrics:
    """``record_metrics`` and ``metrics`` on the Redis broker's server."""

    if TYPE_CHECKING:
        metrics_retention: float

        def _run(self, name: str, args: Sequence[Any], *, retry: bool = True,
                 again: int | None = None) -> Any: ...

    def record_metrics(self, rows: Sequence[MetricRow]) -> None:
        if not rows:
            return
        retention = self.metrics_retention
        args: list[Any] = [_receipts.take(1)[0], RECEIPT_TTL_MS, "0", MAX_TASK_NAMES,
                           OTHER_TASKS, ALL_TASKS]
        for step, row in stored_rows(rows):
            args += (f"{KEYS[step]}:{row.minute}", int(row.minute + step + retention),
                     row.task, encode(row))
        self._run("metrics", args, again=2)

    def metrics(self, since: float, until: float, task: str | None = None, *,
                step: int = 60) -> list[MetricRow]:
        periods = span(since, until, time.time(), self.metrics_retention, step)
        if not periods:
            return []
        every = task is None
        reply = self._run("metrics_read", [KEYS[step], periods[0], step, len(periods),
                                           task or "", "1" if every else "0"])
        found: list[MetricRow] = []
        for start, stored in zip(periods, reply, strict=True):
            if every:
                for at in range(0, len(stored), 2):
                    name = text(stored[at])
                    if name != ALL_TASKS:
                        found.append(decode(start, name, text(stored[at + 1])))
            elif stored:
                found.append(decode(start, task or "", text(stored)))
        if every:
            found.sort(key=lambda row: (row.minute, row.task))
        return found
