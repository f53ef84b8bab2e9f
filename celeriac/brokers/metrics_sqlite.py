"""Metric rollups in the SQLite broker's file (see :mod:`celeriac.brokers.metrics`).

A mixin of :class:`celeriac.brokers.sqlite.SQLiteBroker`. Its table is part of the
broker's schema (:data:`METRICS_SCHEMA`):

``metrics``
    one row per (minute, task name), and one per minute with task ``''`` (the total);
    the counts in columns, the runtime histogram as its sparse text
    (:func:`~celeriac.brokers.metrics.encode_hist`). The primary key is (minute, task),
    so a read of a span of minutes is one range of the key; a second index,
    (task, minute), makes a read of one task (or of the totals) one range too, however
    many other names there are.

A write is one ``BEGIN IMMEDIATE`` transaction: read the rows it adds to (by key),
write the sums, count the names of a minute that gets a new one (its range of the
key: at most :data:`~celeriac.brokers.metrics.MAX_TASK_NAMES` rows), and delete the
rows past the retention (a range of the key, usually empty).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from celeriac.brokers.metrics import (
    ALL_TASKS,
    MAX_TASK_NAMES,
    OTHER_TASKS,
    MetricRow,
    decode_hist,
    encode_hist,
    minute_span,
    with_totals,
)

T = TypeVar("T")

METRICS_SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    minute INTEGER NOT NULL,
    task TEXT NOT NULL,
    processed INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    retried INTEGER NOT NULL,
    stalls INTEGER NOT NULL,
    hist TEXT NOT NULL,
    PRIMARY KEY (minute, task)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metrics_task ON metrics (task, minute)
"""

_COLUMNS = "minute, task, processed, failed, retried, stalls, hist"
_UPSERT = (f"INSERT OR REPLACE INTO metrics ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)")
_FOUND = f"SELECT {_COLUMNS} FROM metrics WHERE minute = ? AND task = ?"
_NAMED = ("SELECT count(*) FROM metrics WHERE minute = ? AND task NOT IN (?, ?)")


def _row(values: Sequence[object]) -> MetricRow:
    minute, task, processed, failed, retried, stalls, hist = values
    return MetricRow(int(minute), str(task), int(processed), int(failed),  # type: ignore[call-overload]
                     int(retried), decode_hist(str(hist)), int(stalls))  # type: ignore[call-overload]


def record(conn: sqlite3.Connection, rows: Sequence[MetricRow], now: float,
           retention: float) -> None:
    """Add ``rows`` (and their minutes' totals) to the stored ones; drop expired rows."""
    for row in with_totals(rows):
        task = row.task
        found = conn.execute(_FOUND, (row.minute, task)).fetchone()
        if found is None and task not in (ALL_TASKS, OTHER_TASKS) and conn.execute(
                _NAMED, (row.minute, ALL_TASKS, OTHER_TASKS)).fetchone()[0] >= MAX_TASK_NAMES:
            task = OTHER_TASKS
            found = conn.execute(_FOUND, (row.minute, task)).fetchone()
        total = MetricRow(row.minute, task, row.processed, row.failed, row.retried,
                          row.runtime_hist, row.stalls)
        if found is not None:
            total = _row(found).merged(total)
        conn.execute(_UPSERT, (total.minute, total.task, total.processed, total.failed,
                               total.retried, total.stalls, encode_hist(total.runtime_hist)))
    conn.execute("DELETE FROM metrics WHERE minute <= ?", (now - retention - 60,))


class SQLiteMetrics:
    """``record_metrics`` and ``metrics`` on the SQLite broker's database."""

    if TYPE_CHECKING:
        metrics_retention: float

        def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    def record_metrics(self, rows: Sequence[MetricRow]) -> None:
        if rows:
            retention = self.metrics_retention
            self._write(lambda conn: record(conn, rows, time.time(), retention))

    def metrics(self, since: float, until: float, task: str | None = None) -> list[MetricRow]:
        span = minute_span(since, until, time.time(), self.metrics_retention)
        if not span:
            return []
        first, last = span[0], span[-1]
        if task is None:
            sql = (f"SELECT {_COLUMNS} FROM metrics WHERE minute BETWEEN ? AND ? AND task != ? "
                   "ORDER BY minute, task")
            args: tuple[object, ...] = (first, last, ALL_TASKS)
        else:
            sql = (f"SELECT {_COLUMNS} FROM metrics WHERE task = ? AND minute BETWEEN ? AND ? "
                   "ORDER BY minute")
            args = (task, first, last)
        found = self._read(lambda conn: conn.execute(sql, args).fetchall())
        return [_row(values) for values in found]
