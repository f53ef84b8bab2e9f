"""Metric rollups: per minute and task name, what workers ran (issue 14's dashboard).

Each worker process counts, per (minute, task name), the runs that finished
(``processed``: succeeded or failed), those that ``failed``, those that ``retried``,
and how long each run took in a :data:`BUCKETS`-bucket *log-scale histogram*; its
supervisor counts the event loop *stalls* (``task-blocked`` reports) per task
name. Every few seconds each process adds what it counted to the broker's rows in
one call (:meth:`Broker.record_metrics <celeriac.brokers.base.Broker.record_metrics>`),
so the dashboard, Prometheus and ``celeriac metrics`` read the same numbers from the
broker, whichever process asks and whenever it started.

Why a fixed histogram: rows written by many processes must *add up*. Counts add, and
so do histograms with the same buckets, while percentiles do not (the median of two
medians is not the median). The buckets grow by a factor of 2^(1/3) from 100 µs to
about three days (the first holds everything faster, the last everything slower), so
a percentile read back is off by less than a bucket's width, 26%, and usually far less
(the bucket is split log-linearly by rank, :func:`percentile`), whatever the spread of
runtimes, in at most 96 numbers per row (stored sparse: only the buckets that have runs).

Bounded storage: a row per (minute, task name) and one total per minute (task
:data:`ALL_TASKS`), deleted once older than the retention
(``worker_metrics_retention``, 72 hours: at most 4,320 minutes). Task names are the
registered names of the tasks (not a shadow name a caller chose), and a minute keeps
at most :data:`MAX_TASK_NAMES`: further names of that minute are added to the row
:data:`OTHER_TASKS`. A read of a span is one lookup per minute in it: O(minutes x
task names), whatever else the broker holds.

Each run is counted twice: in its minute's row and in its hour's (``step`` 60 and
3600), so a read of a day of every task is 24 rows per name instead of 1,440; the
hourly rows are kept for the same retention.

This module holds what every broker shares: the row, the buckets, the text form of a
row that SQLite and Redis store (:func:`encode`, merged on the Redis server by
``lua/metrics.lua``) and the memory broker's store (:class:`MetricStore`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Buckets of the runtime histogram.
BUCKETS = 96
#: Upper bound of bucket 0 (seconds): faster runs all land there.
FIRST_BOUND = 1e-4
#: Buckets per doubling of the runtime (each is 2^(1/3), 26%, wider than the one before).
PER_DOUBLING = 3
#: The task name of the per-minute totals over every task (no task has an empty name).
ALL_TASKS = ""
#: The task name that collects a minute's runs past its first :data:`MAX_TASK_NAMES` names.
OTHER_TASKS = "<other>"
#: Most task names kept per minute (the total and :data:`OTHER_TASKS` not counted).
MAX_TASK_NAMES = 1000
#: Longest task name kept (longer ones are cut).
NAME_LIMIT = 200
#: Default retention of the rows (seconds): 72 hours.
DEFAULT_RETENTION = 72 * 3600.0
#: The periods rows are kept for, in seconds: each run is counted in its minute's row and
#: in its hour's (so a day of one task is 24 rows to read, not 1,440).
MINUTE, HOUR = 60, 3600
STEPS = (MINUTE, HOUR)

_LOG_BASE = math.log2(FIRST_BOUND)


def bucket(runtime: float) -> int:
    """The histogram bucket of a run that took ``runtime`` seconds."""
    if runtime < FIRST_BOUND:
        return 0
    return min(int((math.log2(runtime) - _LOG_BASE) * PER_DOUBLING) + 1, BUCKETS - 1)


def bounds(index: int) -> tuple[float, float]:
    """The runtimes (seconds) bucket ``index`` holds: ``lower <= runtime < upper``
    (bucket 0 from 0, the last one up to infinity)."""
    lower = 0.0 if index == 0 else FIRST_BOUND * 2 ** ((index - 1) / PER_DOUBLING)
    upper = math.inf if index == BUCKETS - 1 else FIRST_BOUND * 2 ** (index / PER_DOUBLING)
    return lower, upper


def percentile(hist: Sequence[int], p: float) -> float | None:
    """The ``p``-th percentile (0-100) of the runtimes counted in ``hist``, in seconds;
    None when it counts no run.

    The run of that rank is placed within its bucket by rank, on the log scale (runs
    spread evenly in ``log(runtime)`` across the bucket), so the estimate is never
    further than the bucket's width from the truth, and usually much closer. Bucket 0
    is split linearly from 0; the last bucket answers its lower bound.
    """
    total = sum(hist)
    if total == 0:
        return None
    rank = min(max(p, 0.0), 100.0) / 100.0 * total
    seen = 0
    for index, count in enumerate(hist):
        if count and seen + count >= rank:
            lower, upper = bounds(index)
            share = (rank - seen) / count
            if index == 0:
                return upper * share
            if upper == math.inf:
                return lower
            return float(lower * (upper / lower) ** share)
        seen += count
    return bounds(BUCKETS - 1)[0]  # pragma: no cover - rank <= total always ends the loop


EMPTY_HIST: tuple[int, ...] = (0,) * BUCKETS


@dataclass(frozen=True)
class MetricRow:
    """What one task name did in one minute (or what every task did: :data:`ALL_TASKS`)."""

    #: Unix time of the minute's start (a multiple of 60); of the hour's for an hourly row.
    minute: int
    task: str
    #: Runs that finished: succeeded or failed (a retry is not finished).
    processed: int = 0
    #: Of those, the runs that failed (an exception, a ``Reject`` not requeued, a hard
    #: time limit, a worker process lost on the last delivery).
    failed: int = 0
    #: Runs that ended asking to be retried.
    retried: int = 0
    #: :data:`BUCKETS` counts of the runs a worker process timed, by runtime
    #: (:func:`bucket`): every processed or retried run, less those the supervisor ended
    #: (a hard time limit, a lost process), whose runtime nobody measured.
    runtime_hist: tuple[int, ...] = EMPTY_HIST
    #: Event loop stalls (``task-blocked`` reports) this task caused.
    stalls: int = 0

    def merged(self, other: MetricRow) -> MetricRow:
        """This row plus ``other`` (same minute and task: what two processes counted)."""
        return MetricRow(self.minute, self.task, self.processed + other.processed,
                         self.failed + other.failed, self.retried + other.retried,
                         tuple(a + b for a, b in zip(self.runtime_hist, other.runtime_hist,
                                                     strict=True)),
                         self.stalls + other.stalls)

    @property
    def runs(self) -> int:
        """How many runs the histogram counts."""
        return sum(self.runtime_hist)

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile (0-100) runtime in seconds (None: no timed run)."""
        return percentile(self.runtime_hist, p)

    def percentiles(self, *ps: float) -> tuple[float | None, ...]:
        """Several percentiles at once, e.g. ``row.percentiles(50, 90, 99)``."""
        return tuple(percentile(self.runtime_hist, p) for p in ps)


def combine(rows: Iterable[MetricRow], *, minute: int = 0, task: str = ALL_TASKS) -> MetricRow:
    """The sum of ``rows`` as one row (e.g. a task's whole hour), labelled ``minute``/``task``."""
    total = MetricRow(minute, task)
    for row in rows:
        total = total.merged(MetricRow(minute, task, row.processed, row.failed, row.retried,
                                       row.runtime_hist, row.stalls))
    return total


def with_totals(rows: Sequence[MetricRow]) -> list[MetricRow]:
    """``rows`` (equal keys merged, names cut to :data:`NAME_LIMIT`) followed by the
    total of each of their minutes (task :data:`ALL_TASKS`): what a broker stores for one
    :meth:`~celeriac.brokers.base.Broker.record_metrics` call."""
    merged: dict[tuple[int, str], MetricRow] = {}
    totals: dict[int, MetricRow] = {}
    for row in rows:
        minute = int(row.minute) // 60 * 60
        name = row.task[:NAME_LIMIT] or OTHER_TASKS
        clean = MetricRow(minute, name, row.processed, row.failed, row.retried,
                          _checked(row.runtime_hist), row.stalls)
        key = (minute, name)
        found = merged.get(key)
        merged[key] = clean if found is None else found.merged(clean)
        total = totals.get(minute)
        as_total = MetricRow(minute, ALL_TASKS, clean.processed, clean.failed, clean.retried,
                             clean.runtime_hist, clean.stalls)
        totals[minute] = as_total if total is None else total.merged(as_total)
    return [*merged.values(), *totals.values()]


def _checked(hist: Sequence[int]) -> tuple[int, ...]:
    if len(hist) != BUCKETS:
        raise ValueError(f"a runtime histogram has {BUCKETS} buckets, not {len(hist)}")
    return tuple(int(count) for count in hist)


def check_step(step: int) -> None:
    if step not in STEPS:
        raise ValueError(f"metric rows are kept per minute (step 60) and per hour (step 3600), "
                         f"not per {step!r} seconds")


def span(since: float, until: float, now: float, retention: float, step: int = MINUTE
         ) -> range:
    """The periods (their start times) that a read of ``since``..``until`` covers: each
    one that starts at or after the one holding ``since`` (or the oldest kept one) and at
    or before ``until``."""
    check_step(step)
    first = int(max(since, now - retention)) // step * step
    return range(first, int(until) // step * step + 1, step)


def stored_rows(rows: Sequence[MetricRow]) -> list[tuple[int, MetricRow]]:
    """``(step, row)`` for every row a broker adds to for one
    :meth:`~celeriac.brokers.base.Broker.record_metrics` call: the rows and totals of each
    minute (:func:`with_totals`), then the same summed per hour."""
    minutes = with_totals(rows)
    hours: dict[tuple[int, str], MetricRow] = {}
    for row in minutes:
        hour = row.minute // HOUR * HOUR
        as_hour = MetricRow(hour, row.task, row.processed, row.failed, row.retried,
                            row.runtime_hist, row.stalls)
        found = hours.get((hour, row.task))
        hours[(hour, row.task)] = as_hour if found is None else found.merged(as_hour)
    return [*((MINUTE, row) for row in minutes), *((HOUR, row) for row in hours.values())]


# -- the stored text form (SQLite, Redis) ----------------------------------------------
def encode_hist(hist: Sequence[int]) -> str:
    """The histogram as ``index:count`` pairs of its non-empty buckets: ``"12:3,13:1"``."""
    return ",".join([f"{i}:{c}" for i, c in enumerate(hist) if c])


def decode_hist(text: str) -> tuple[int, ...]:
    hist = [0] * BUCKETS
    if text:
        for pair in text.split(","):
            index, _, count = pair.partition(":")
            hist[int(index)] += int(count)
    return tuple(hist)


def encode(row: MetricRow) -> str:
    """A row's numbers as one string, ``processed,failed,retried,stalls|hist``."""
    return (f"{row.processed},{row.failed},{row.retried},{row.stalls}|"
            f"{encode_hist(row.runtime_hist)}")


def decode(minute: int, task: str, text: str) -> MetricRow:
    counts, _, hist = text.partition("|")
    processed, failed, retried, stalls = (int(n) for n in counts.split(","))
    return MetricRow(minute, task, processed, failed, retried, decode_hist(hist), stalls)


# -- the memory broker's store -----------------------------------------------------------
def _named(names: dict[str, MetricRow]) -> int:
    """How many task names a minute holds, its total and its :data:`OTHER_TASKS` not counted."""
    return len(names) - (ALL_TASKS in names) - (OTHER_TASKS in names)


class MetricStore:
    """Rows in a dict per period, behind a lock of their own (the memory broker's store)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: step -> period start -> task name -> row.
        self._periods: dict[int, dict[int, dict[str, MetricRow]]] = {step: {} for step in STEPS}

    def record(self, rows: Sequence[MetricRow], now: float, retention: float) -> None:
        stored = stored_rows(rows)
        with self._lock:
            for step, row in stored:
                names = self._periods[step].setdefault(row.minute, {})
                task = row.task
                if task not in names and task not in (ALL_TASKS, OTHER_TASKS) and (
                        _named(names) >= MAX_TASK_NAMES):
                    task = OTHER_TASKS
                    row = MetricRow(row.minute, task, row.processed, row.failed, row.retried,
                                    row.runtime_hist, row.stalls)
                found = names.get(task)
                names[task] = row if found is None else found.merged(row)
            oldest = now - retention
            for step, periods in self._periods.items():
                for start in [m for m in periods if m + step <= oldest]:
                    del periods[start]

    def read(self, periods: range, task: str | None) -> list[MetricRow]:
        found: list[MetricRow] = []
        with self._lock:
            kept = self._periods[periods.step]
            for start in periods:
                names = kept.get(start)
                if not names:
                    continue
                if task is None:
                    found.extend(row for name, row in sorted(names.items()) if name != ALL_TASKS)
                elif task in names:
                    found.append(names[task])
        return found
