"""Metric rollups in the SQLite broker's file (see :mod:`celeriac.brokers.metrics`).

A mixin of :class:`celeriac.brokers.sqlite.SQLiteBroker`. Its table is part of the
broker's schema (:data:`METRICS_SCHEMA`):

``metrics``
    one row per (step, minute, task name): ``step`` 60 for a minute's row, 3600 for an
    hour's (``minute`` then holds the hour's start), and task ``''`` for the totals;
    the counts in columns, the runtime histogram as its sparse text
    (:func:`~celeriac.brokers.metrics.encode_hist`). The primary key is (step, minute,
    task), so a read of a span of minutes is one range of the key; a second index,
    (step, task, minute), makes a read of one task (or of the totals) one range too,
    however many other names there are.

A write is one ``BEGIN IMMEDIATE`` transaction: read the rows it adds to (by key),
write the sums, count the names of a period that gets a new one (its range of the
key: at most :data:`~celeriac.brokers.metrics.MAX_TASK_NAMES` rows), and delete the
rows past the retention (a range of the key per step, usually empty).
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
    STEPS,
    MetricRow,
    decode_hist,
    encode_hist,
    span,
    stored_rows,
)

T = TypeVar("T")

METRICS_SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    step INTEGER NOT NULL,
    minute INTEGER NOT NULL,
    task TEXT NOT NULL,
    processed INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    retried INTEGER NOT NULL,
    stalls INTEGER NOT NULL,
    hist TEXT NOT NULL,
    PRIMARY KEY (step, minute, task)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metrics_task ON metrics (step, task, minute)
"""

_COLUMNS = "minute, task, processed, failed, retried, stalls, hist"
_UPSERT = f"INSERT OR REPLACE INTO metrics (step, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_FOUND = f"SELECT {_COLUMNS} FROM metrics WHERE step = ? AND minute = ? AND task = ?"
_NAMED = "SELECT count(*) FROM metrics WHERE step = ? AND minute = ? AND task NOT IN (?, ?)"


def _row(values: Sequence[object]) -> MetricRow:
    minute, task, processed, failed, retried, stalls, hist = values
    return MetricRow(int(minute), str(task), int(processed), int(failed),  # type: ignore[call-overload]
                     int(retried), decode_hist(str(hist)), int(stalls))  # type: ignore[call-overload]


def record(conn: sqlite3.Connection, rows: Sequence[MetricRow], now: float,
           retention: float) -> None:
    """Add ``rows`` (and their totals, per minute and per hour) to the stored ones; drop
    expired rows."""
    for step, row in stored_rows(rows):
        task = row.task
        found = conn.execute(_FOUND, (step, row.minute, task)).fetchone()
        if found is None and task not in (ALL_TASKS, OTHER_TASKS) and conn.execute(
                _NAMED, (step, row.minute, ALL_TASKS, OTHER_TASKS)).fetchone()[0] >= MAX_TASK_NAMES:
            task = OTHER_TASKS
            found = conn.execute(_FOUND, (step, row.minute, task)).fetchone()
        total = MetricRow(row.minute, task, row.processed, row.failed, row.retried,
                          row.runtime_hist, row.stalls)
        if found is not None:
            total = _row(found).merged(total)
        conn.execute(_UPSERT, (step, total.minute, total.task, total.processed, total.failed,
                               total.retried, total.stalls, encode_hist(total.runtime_hist)))
    for step in STEPS:
        conn.execute("DELETE FROM metrics WHERE step = ? AND minute <= ?",
                     (step, now - retention - step))


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

    def metrics(self, since: float, until: float, task: str | None = None, *,
                step: int = 60) -> list[MetricRow]:
        periods = span(since, until, time.time(), self.metrics_retention, step)
        if not periods:
            return []
        first, last = periods[0], periods[-1]
        if task is None:
            sql = (f"SELECT {_COLUMNS} FROM metrics WHERE step = ? AND minute BETWEEN ? AND ? "
                   "AND task != ? ORDER BY minute, task")
            args: tuple[object, ...] = (step, first, last, ALL_TASKS)
        else:
            sql = (f"SELECT {_COLUMNS} FROM metrics WHERE step = ? AND task = ? "
                   "AND minute BETWEEN ? AND ? ORDER BY minute")
            args = (step, task, first, last)
        found = self._read(lambda conn: conn.execute(sql, args).fetchall())
        return [_row(values) for values in found]
