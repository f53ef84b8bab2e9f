"""``celeriac metrics``: the broker's metric rollups of the last minutes or hours, per task.

What workers counted (:mod:`celeriac.middleware.metrics`, kept by the broker:
:mod:`celeriac.brokers.metrics`), summed over a span of whole minutes ending with the
current one: per task name, the runs that finished, failed and retried, the rate of
finished runs per second over the span, runtime percentiles from the merged
histograms, and event loop stalls; then the total over every task. ``--hours`` sums
whole hours from the hourly rows instead. A table on a terminal, tab-separated lines
when piped; ``--json`` prints the same as one JSON object, ``--each`` one JSON line
per stored row instead.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from celeriac.brokers.metrics import ALL_TASKS, HOUR, MINUTE, MetricRow, combine

if TYPE_CHECKING:
    from celeriac.app import Celeriac

#: A decorator that loads the ``-A`` app and passes it first (``celeriac.cli.main``'s).
AppCommand = Callable[[Callable[..., Any]], Callable[..., Any]]

#: The percentiles shown.
PERCENTILES = (50, 90, 99)


def summary(row: MetricRow, seconds: float) -> dict[str, Any]:
    """One task's (or the total's) figures over a span of ``seconds``."""
    out: dict[str, Any] = {"processed": row.processed, "failed": row.failed,
                           "retried": row.retried, "stalls": row.stalls,
                           "per_second": round(row.processed / seconds, 3)}
    for p, value in zip(PERCENTILES, row.percentiles(*PERCENTILES), strict=True):
        out[f"p{p}"] = None if value is None else round(value, 6)
    return out


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"


def show_metrics(app: Celeriac, periods: int, step: int, task: str | None, as_json: bool,
                 each: bool) -> None:
    """Sum the last ``periods`` minutes (``step`` 60) or hours (3600), the current one
    included; ``each``: print the stored rows instead."""
    now = time.time()
    since = now - (periods - 1) * step
    rows = app.broker.metrics(since, now, task, step=step)
    if each:
        for row in rows:
            click.echo(json.dumps({"start": row.minute, "task": row.task,
                                   **summary(row, float(step))}))
        return
    start = int(since) // step * step
    seconds = now - start
    by_name: dict[str, list[MetricRow]] = {}
    for row in rows:
        by_name.setdefault(row.task, []).append(row)
    summed = {name: combine(found, task=name) for name, found in sorted(by_name.items())}
    if task is None:  # the stored totals: one row per minute, however many names
        total = combine(app.broker.metrics(since, now, ALL_TASKS, step=step))
    else:
        total = summed.get(task, MetricRow(0, task))
    if as_json:
        click.echo(json.dumps({"since": start, "until": now,
                               "tasks": {name: summary(row, seconds)
                                         for name, row in summed.items()},
                               "total": summary(total, seconds)}))
        return
    columns = ("task", "processed", "failed", "retried", "per second",
               *(f"p{p}" for p in PERCENTILES), "stalls")
    listed = [*summed.items(), *([("(all tasks)", total)] if task is None else [])]
    lines = []
    for name, row in listed:
        figures = summary(row, seconds)
        lines.append((name, str(row.processed), str(row.failed), str(row.retried),
                      f"{figures['per_second']:.2f}",
                      *(_seconds(figures[f"p{p}"]) for p in PERCENTILES), str(row.stalls)))
    if not sys.stdout.isatty():  # piped: whole lines, one per task, never cut to a width
        click.echo("\t".join(columns))
        for line in lines:
            click.echo("\t".join(line))
        return
    what = f"{periods} minute(s)" if step == MINUTE else f"{periods} hour(s)"
    table = Table(title=f"the last {what} on {app.conf.broker_url}")
    for column in columns:
        table.add_column(column, justify="left" if column == "task" else "right")
    for line in lines:
        table.add_row(*line)
    Console().print(table)


def metrics_command(app_command: AppCommand) -> click.Command:
    """The ``metrics`` command; ``app_command`` loads the ``-A`` app (``celeriac.cli.main``)."""

    @click.command("metrics")
    @click.option("-m", "--minutes", default=15, show_default=True,
                  type=click.IntRange(min=1, max=72 * 60),
                  help="Whole minutes to sum, the current one included.")
    @click.option("-H", "--hours", type=click.IntRange(min=1, max=72),
                  help="Whole hours to sum instead (from the hourly rows), the current one "
                       "included.")
    @click.option("--task", default=None, help="Only this task name.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @click.option("--each", is_flag=True,
                  help="Print each stored row (minute or hour, task) as a JSON line instead.")
    @app_command
    def metrics(app: Celeriac, minutes: int, hours: int | None, task: str | None,
                as_json: bool, each: bool) -> None:
        """Tasks run, failed and retried per task name, with runtime percentiles."""
        if hours is not None:
            show_metrics(app, hours, HOUR, task, as_json, each)
        else:
            show_metrics(app, minutes, MINUTE, task, as_json, each)

    return metrics
