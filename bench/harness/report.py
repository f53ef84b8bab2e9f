"""``docs/benchmarks.md``: machine facts, the targets, a table and a chart per workload.

Every cell is the median of the run's repeats, with every run's value beside it so the
spread is visible; rates of a workload with a ceiling also read as a ratio to it. The
exact command that produced the report is its first line after the title, so anyone can
run it again; a ``--quick`` report says in its banner that it is a smoke run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .bounds import BOUNDS
from .context import Sizes
from .systems import System
from .targets import TARGETS, Medians, verdict
from .workloads import WORKLOADS, Workload, depth_metrics

#: runs[workload][label][metric] = one value per run
Runs = dict[str, dict[str, dict[str, list[float]]]]


@dataclass
class Outcome:
    """Everything a run produced, for the report and the charts."""

    command: str
    quick: bool
    repeat: int
    sizes: Sizes
    workloads: list[str]
    systems: list[System]
    facts: dict[str, str]
    load: tuple[float, float]
    started: str
    seconds: float
    runs: Runs = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    trouble: dict[str, dict[str, int]] = field(default_factory=dict)

    def medians(self) -> Medians:
        return {w: {label: {m: statistics.median(v) for m, v in metrics.items()}
                    for label, metrics in by_label.items()}
                for w, by_label in self.runs.items()}


def metrics_of(workload: Workload, sizes: Sizes) -> list[str]:
    return depth_metrics(sizes) if workload.name == "depth" else workload.metrics


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def workload_table(outcome: Outcome, workload: Workload) -> list[str]:
    metrics = metrics_of(workload, outcome.sizes)
    runs = outcome.runs.get(workload.name, {})
    medians = outcome.medians().get(workload.name, {})
    ceiling = medians.get(workload.ceiling, {}).get(workload.ratio_of or "")
    head = ["system", *metrics]
    if ceiling:
        head.insert(2, "x ceiling")
    head.append("runs (first column)")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for label in outcome.labels.get(workload.name, []):
        if label in outcome.skipped.get(workload.name, {}):
            why = outcome.skipped[workload.name][label]
            lines.append(f"| {label} | " + " | ".join(["-"] * (len(head) - 2)) + f" | n/a: {why} |")
            continue
        values = medians.get(label, {})
        cells = [number(values[m]) if m in values else "-" for m in metrics]
        if ceiling:
            own = values.get(workload.ratio_of or "")
            cells.insert(1, f"{own / ceiling:.2f}" if own is not None else "-")
        every = ", ".join(number(v) for v in runs.get(label, {}).get(metrics[0], []))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {every or 'failed'} |")
    if workload.name == "events":
        lines += paired(runs, "celeriac-gevent -E", "celeriac-gevent", "tasks/s")
    return lines


def paired(runs: dict[str, dict[str, list[float]]], top: str, bottom: str, metric: str
           ) -> list[str]:
    """``top / bottom`` run by run: the two ran side by side in each run, so their ratio is
    steadier on a shared machine than the ratio of their medians."""
    ups, downs = runs.get(top, {}).get(metric, []), runs.get(bottom, {}).get(metric, [])
    if not ups or len(ups) != len(downs):
        return []
    ratios = [u / d for u, d in zip(ups, downs, strict=True)]
    return ["", f"{top} / {bottom}, {metric}, run by run: "
            + ", ".join(f"{r:.2f}" for r in ratios) + f" (median {statistics.median(ratios):.2f})"]


def render(outcome: Outcome, charts: dict[str, str]) -> str:
    out = ["# Benchmarks", ""]
    if outcome.quick:
        out += ["> **Smoke run (`--quick`)**: small sizes, one repeat, a subset of systems, "
                "on whatever else the machine was doing. It proves the command works; its "
                "figures are not the project's benchmark figures.", ""]
    out += [f"Produced by `{outcome.command}` on {outcome.started} in "
            f"{outcome.seconds / 60:.1f} min; medians of {outcome.repeat} run(s), the systems' "
            "order rotated from run to run. Everything runs on this machine over loopback: a "
            "private `redis-server` (no persistence), a private RabbitMQ node (broker "
            "workload only), the feed hub of `examples/gevent/feedhub.py`.", "", "## Machine", "",
            "| fact | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in outcome.facts.items()]
    out += [f"| load average (1 min) | {outcome.load[0]:.2f} before, {outcome.load[1]:.2f} "
            "after (above ~1 on 2 cores, something else was running) |", ""]
    out += targets_section(outcome)
    for name in outcome.workloads:
        workload = WORKLOADS[name]
        out += [f"## {workload.title}", "", workload.method(outcome.sizes), ""]
        out += workload_table(outcome, workload)
        out += targets_of(outcome, name)
        if name in BOUNDS:
            out += ["", f"**What bounds it.** {BOUNDS[name]}"]
        if name in charts:
            out += ["", f"![{workload.title}]({charts[name]})"]
        out.append("")
    out += ["## Settings", "", "`C` is the workload's concurrency (feed hub and memory: "
            f"{outcome.sizes.feed_concurrency:,}; every other workload: "
            f"{outcome.sizes.noop_concurrency}). Each system's task module, the same bodies "
            "for all (`bench/harness/tasks.py`), holds one Redis `BlockingConnectionPool` "
            "of C + 16 connections and one `requests.Session` whose pool keeps C "
            "connections.", "", "| system | settings |", "|---|---|"]
    out += [f"| {s.name} | {s.settings} |" for s in outcome.systems]
    out.append("")
    out += problems(outcome)
    return "\n".join(out).rstrip() + "\n"


def targets_section(outcome: Outcome) -> list[str]:
    medians = outcome.medians()
    out = ["## Targets (issue 15)", ""]
    if outcome.quick:
        out += ["Verdicts of a smoke run are about its sizes and its machine's load, not "
                "about celeriac: only a full run on a quiet machine says met or not met.", ""]
    out += ["| workload | target | celeriac | verdict |", "|---|---|---:|---|"]
    for target in TARGETS:
        if target.workload not in outcome.workloads:
            continue
        figure, said = verdict(target, medians)
        out.append(f"| {target.workload} | {target.text} | {figure} | {said} |")
    return [*out, ""]


def targets_of(outcome: Outcome, workload: str) -> list[str]:
    """The issue's targets for ``workload``, each with the celeriac figure and its verdict,
    under that workload's table."""
    medians = outcome.medians()
    out = []
    for target in TARGETS:
        if target.workload == workload:
            figure, said = verdict(target, medians)
            out.append(f"- target: {target.text}: celeriac {figure}, **{said}**")
    return ["", *out] if out else []


def problems(outcome: Outcome) -> list[str]:
    out: list[str] = []
    if outcome.errors:
        out += ["## Failed measurements", ""] + [f"- {e.splitlines()[0]}" for e in outcome.errors]
        out.append("")
    lines = [(name, line, count) for name, seen in outcome.trouble.items()
             for line, count in seen.items()]
    if lines:
        out += ["## Error lines in worker logs", ""]
        out += [f"- {name} ({count}x): `{line}`" for name, line, count in lines[:40]]
        out.append("")
    return out


def write(outcome: Outcome, path: Path, charts: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(outcome, charts))
