"""The Overview page (``/``): throughput charts from the broker's metric rollups, and the
figures of the moment (queue depths, oldest message age, workers, busy slots, error rate).

Everything is read from the broker when asked, never kept in this process:

* the charts come from ``/overview/series?range=1h|24h|72h``, JSON that ``overview.js``
  draws with uPlot: the per-minute totals over every task (1 h: 60 lookups) or the hourly
  ones (24 h, 72 h: 24 or 72 lookups), so a read costs the same whatever the broker holds
  and however many task names there are (``bench/metrics_read.py``). Hourly for the long
  ranges because a chart about 1,000 pixels wide cannot show 1,440 or 4,320 minutes
  anyway, and the hourly rows make the read 60 times smaller than summing minutes;
* a period nobody recorded has no row: it is a zero in the series (nothing ran), never a
  gap, so the chart does not draw a line across an idle hour as if work had gone on;
* the figures read the queue counters (:meth:`~celeriac.brokers.base.Broker.stats`, the
  counts the Queues page shows), the workers' heartbeats and the per-minute totals of the
  last :data:`RECENT_MINUTES` minutes: a handful of reads, none of them over messages.

A rate is the period's count divided by its length; the current period's by the seconds
of it that have passed, so the newest point is the rate so far, not a count diluted over
a period that has not ended.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Blueprint, jsonify, render_template, request

from celeriac.beat.presence import worker_nodes
from celeriac.brokers.base import QueueStats
from celeriac.brokers.metrics import ALL_TASKS, HOUR, MINUTE, MetricRow, combine
from celeriac.dashboard.app import dashboard

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from celeriac.dashboard.data import DashboardData

overview = Blueprint("overview", __name__, template_folder="templates")

#: The chart ranges: name -> (seconds shown, rollup period read).
RANGES: dict[str, tuple[int, int]] = {
    "1h": (3600, MINUTE),
    "24h": (24 * 3600, HOUR),
    "72h": (72 * 3600, HOUR),
}
DEFAULT_RANGE = "1h"
#: Minutes (the current one included) the figures' processed, failed and error rate span.
RECENT_MINUTES = 15


@dataclass(frozen=True)
class Series:
    """Processed and failed per second in each period of a range, oldest first."""

    range: str
    step: int
    #: Start of each period (unix seconds): every period of the range, recorded or not.
    times: list[int]
    processed: list[float]
    failed: list[float]
    #: Sums over the whole range.
    total_processed: int
    total_failed: int

    def as_json(self) -> dict[str, Any]:
        return {"range": self.range, "step": self.step, "times": self.times,
                "processed": self.processed, "failed": self.failed,
                "total": {"processed": self.total_processed, "failed": self.total_failed,
                          "error_rate": error_rate(self.total_processed, self.total_failed)}}


@dataclass(frozen=True)
class QueueDepth:
    name: str
    stats: QueueStats

    @property
    def depth(self) -> int:
        """Messages waiting: ready, and delayed (an eta, a countdown, a retry)."""
        return self.stats.ready + self.stats.scheduled


@dataclass(frozen=True)
class Figures:
    """The numbers at the top of the Overview page."""

    queues: list[QueueDepth]
    workers: int
    busy_slots: int
    slots: int
    #: Over the last :data:`RECENT_MINUTES` minutes (the current one so far).
    processed: int
    failed: int
    #: Seconds those minutes span (for a rate).
    seconds: float

    @property
    def error_rate(self) -> float | None:
        return error_rate(self.processed, self.failed)

    @property
    def error_percent(self) -> str:
        return percent(self.error_rate)

    @property
    def per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def oldest_age(self) -> float | None:
        """The longest any ready message has waited, over every queue."""
        ages = [q.stats.oldest_age for q in self.queues if q.stats.oldest_age is not None]
        return max(ages) if ages else None


def error_rate(processed: int, failed: int) -> float | None:
    """Failed runs per finished run (None: nothing finished)."""
    return failed / processed if processed else None


def percent(rate: float | None) -> str:
    """``6.3%`` (halves rounded up, as ``overview.js`` rounds them: the figures and the
    chart's caption agree), ``-`` for None."""
    return "-" if rate is None else f"{math.floor(rate * 1000 + 0.5) / 10:.1f}%"


def series(data: DashboardData, name: str, now: float | None = None) -> Series:
    """The chart of range ``name`` (a key of :data:`RANGES`) ending with the period
    holding ``now``: one read of the broker's totals over every task."""
    seconds, step = RANGES[name]
    now = time.time() if now is None else now
    last = int(now) // step * step
    starts = list(range(last - (seconds // step - 1) * step, last + 1, step))
    rows: list[MetricRow] = data.call(
        lambda: data.app.broker.metrics(starts[0], now, ALL_TASKS, step=step))
    found = {row.minute: row for row in rows}
    processed, failed = [], []
    for start in starts:
        row = found.get(start, MetricRow(start, ALL_TASKS))
        length = max(1.0, min(float(step), now - start))  # the current period: so far
        processed.append(round(row.processed / length, 4))
        failed.append(round(row.failed / length, 4))
    total = combine(found[start] for start in starts if start in found)
    return Series(name, step, starts, processed, failed, total.processed, total.failed)


def figures(data: DashboardData, now: float | None = None) -> Figures:
    """Queue depths, workers and slots, and what finished in the last minutes: three reads
    of the broker (its queue counters, the heartbeats, :data:`RECENT_MINUTES` totals)."""
    broker = data.app.broker
    now = time.time() if now is None else now
    stats: dict[str, QueueStats] = dict(data.call(broker.stats))
    nodes = worker_nodes(data.call(broker.workers))  # beats are not workers
    for name in {q for w in nodes for q in w.info.get("queues", [])} - set(stats):
        stats[name] = QueueStats()  # consumed, empty: a depth of 0 is news too
    since = int(now) // MINUTE * MINUTE - (RECENT_MINUTES - 1) * MINUTE
    recent = combine(data.call(lambda: broker.metrics(since, now, ALL_TASKS, step=MINUTE)))
    return Figures(
        queues=[QueueDepth(name, s) for name, s in sorted(stats.items())],
        workers=len(nodes),
        busy_slots=sum(int(w.info.get("running") or 0) for w in nodes),
        slots=sum(int(w.info.get("concurrency") or 0) for w in nodes),
        processed=recent.processed, failed=recent.failed, seconds=max(1.0, now - since))


@overview.get("/")
def index() -> str:
    """The page; ``?fragment=1``: the figures alone (what htmx refreshes every 2 s)."""
    chosen = request.args.get("range", DEFAULT_RANGE)
    if chosen not in RANGES:
        chosen = DEFAULT_RANGE
    view = figures(dashboard().data)
    if request.args.get("fragment") == "1":
        return render_template("overview_figures.html", view=view, recent=RECENT_MINUTES)
    return render_template("overview.html", view=view, ranges=list(RANGES), chosen=chosen,
                           recent=RECENT_MINUTES, page="overview")


@overview.get("/overview/series")
def series_view() -> tuple[BaseResponse, int]:
    """The chart's data as JSON; an unknown range is a 400 that names the known ones."""
    name = request.args.get("range", DEFAULT_RANGE)
    if name not in RANGES:
        return jsonify({"error": f"unknown range {name[:20]!r}: one of {', '.join(RANGES)}"}), 400
    return jsonify(series(dashboard().data, name).as_json()), 200
