"""What the metric rollups cost to write and read at their full retention.

Per broker (Redis on a loopback ``redis-server`` this script starts, and SQLite in a
temporary file) it fills 72 hours of rows, one ``record_metrics`` call per minute as a
worker's flush would make it (``--tasks`` task names per minute, each with a few
histogram buckets), then times the reads a dashboard makes:

* the totals over every task for 1 h, 24 h and 72 h (the overview's charts);
* one task's rows over 72 h (its page);
* every task's rows over 1 h and 72 h (a table of all tasks);
* the same from the hourly rows (``step=3600``): the totals over 72 h, every task over
  24 h and 72 h.

Each read is the median of ``--repeat`` tries. Reads are one lookup per minute of the
span, so they grow with the span and (for every task's rows) with the names, and with
nothing else the broker holds. Run: ``.venv/bin/python bench/metrics_read.py
[--tasks 20] [--brokers redis,sqlite]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.servers import redis_server

from celeriac.brokers import Broker, broker_from_url
from celeriac.brokers.metrics import ALL_TASKS, BUCKETS, MetricRow, bucket

HOURS = 72


def task_names(count: int) -> list[str]:
    """``count`` task names, as a project's tasks are named."""
    return [f"proj.tasks.task_{i:03d}" for i in range(count)]


def fill(broker: Broker, names: Sequence[str], now: float) -> float:
    """72 hours of rows of ``names``, one call per minute (as a worker's flush makes it,
    each name with a few histogram buckets); returns the median seconds per call.
    ``bench/dashboard_scale.py`` fills its broker's metrics with it too."""
    hist = [0] * BUCKETS
    for runtime, count in ((0.002, 40), (0.004, 25), (0.05, 4), (1.2, 1)):
        hist[bucket(runtime)] += count
    first = int(now) // 60 * 60 - HOURS * 3600 + 60
    took = []
    for minute in range(first, int(now) + 1, 60):
        rows = [MetricRow(minute, name, processed=70, failed=2, retried=1,
                          runtime_hist=tuple(hist), stalls=i % 2) for i, name in enumerate(names)]
        start = time.perf_counter()
        broker.record_metrics(rows)
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def timed(read: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(kind: str, url: str, names: int, repeat: int) -> None:
    broker = broker_from_url(url)
    now = time.time()
    write = fill(broker, task_names(names), now)
    reads: dict[str, Callable[[], list[MetricRow]]] = {
        "totals 1 h": lambda: broker.metrics(now - 3600, now, ALL_TASKS),
        "totals 24 h": lambda: broker.metrics(now - 86400, now, ALL_TASKS),
        "totals 72 h": lambda: broker.metrics(now - HOURS * 3600, now, ALL_TASKS),
        "one task 72 h": lambda: broker.metrics(now - HOURS * 3600, now, "proj.tasks.task_000"),
        "every task 1 h": lambda: broker.metrics(now - 3600, now),
        "every task 72 h": lambda: broker.metrics(now - HOURS * 3600, now),
        "totals 72 h/hour": lambda: broker.metrics(now - HOURS * 3600, now, ALL_TASKS, step=3600),
        "every task 24 h/hour": lambda: broker.metrics(now - 86400, now, step=3600),
        "every task 72 h/hour": lambda: broker.metrics(now - HOURS * 3600, now, step=3600),
    }
    print(f"{kind}: {names} task names, {HOURS} h of minutes; a write of one minute's rows "
          f"{write * 1000:.2f} ms")
    for label, read in reads.items():
        rows = len(read())
        print(f"  {label:<20} {rows:>7} rows  {timed(read, repeat) * 1000:8.1f} ms")
    broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20, help="task names per minute")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--brokers", default="redis,sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for kind in args.brokers.split(","):
            if kind == "redis":
                with redis_server(directory) as url:
                    measure(kind, url, args.tasks, args.repeat)
            elif kind == "sqlite":
                measure(kind, f"sqlite:///{directory / 'metrics.db'}", args.tasks, args.repeat)
            else:
                raise SystemExit(f"unknown broker {kind!r}: redis or sqlite")


if __name__ == "__main__":
    main()
