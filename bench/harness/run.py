"""The runner: every workload's entries, ``--repeat`` times, order rotated, with progress.

Each run goes through the chosen workloads in turn and, within one, through its entries
(the ceiling and the systems) starting one further along than the run before, so drift on
a shared machine falls on every system alike. A failed measurement is recorded and the
run goes on; it shows in the report's "Failed measurements".
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .context import Context
from .procs import BenchError
from .report import Outcome
from .workloads import WORKLOADS, Entry


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")


def measure_all(ctx: Context, outcome: Outcome, console: Console) -> None:
    plans: dict[str, list[Entry]] = {}
    for name in outcome.workloads:
        entries = WORKLOADS[name].entries(outcome.systems)
        plans[name] = entries
        outcome.labels[name] = [e.label for e in entries]
        outcome.skipped[name] = {e.label: e.skipped for e in entries if e.measure is None}
    total = outcome.repeat * sum(1 for es in plans.values() for e in es if e.measure)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("benchmarks", total=total)
        for run in range(outcome.repeat):
            for name in outcome.workloads:
                entries = [e for e in plans[name] if e.measure is not None]
                shift = run % max(1, len(entries))
                for entry in entries[shift:] + entries[:shift]:
                    progress.update(bar, description=f"run {run + 1}/{outcome.repeat} · {name} · "
                                                     f"{entry.label}")
                    one(ctx, outcome, name, entry, run, progress.console)
                    progress.advance(bar)


def one(ctx: Context, outcome: Outcome, workload: str, entry: Entry, run: int,
        console: Console) -> None:
    assert entry.measure is not None
    directory = ctx.root / f"run{run + 1}" / workload / slug(entry.label)
    began = time.monotonic()
    try:
        figures = entry.measure(ctx, Path(directory))
    except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
        outcome.errors.append(f"run {run + 1} {workload} {entry.label}: {exc}")
        console.print(f"[red]run {run + 1} {workload} {entry.label}: FAILED[/red] {exc}")
        return
    target = outcome.runs.setdefault(workload, {}).setdefault(entry.label, {})
    for metric, value in figures.items():
        target.setdefault(metric, []).append(value)
    console.print(f"run {run + 1} [cyan]{workload:8}[/cyan] {entry.label:28} "
                  + ", ".join(f"{m} {v:,.2f}" for m, v in figures.items())
                  + f" [dim]({time.monotonic() - began:.0f} s)[/dim]")
