"""The targets of issue 15, each checked against the run's medians and stated plainly.

A target reads one celeriac figure (and, for ratios, the figure it is set against) from
the medians of the run; when either is missing (the workload or system was not run, or
failed) the target is "not measured", never met by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .workloads import CEILING

#: medians[workload][label][metric]
Medians = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class Target:
    workload: str
    text: str
    #: The figure checked (a rate, a ratio, ms, MB) or None when it is not measured.
    figure: Callable[[Medians], float | None]
    #: Whether that figure meets the target.
    met: Callable[[float], bool]
    unit: str = ""


def _get(medians: Medians, workload: str, label: str, metric: str) -> float | None:
    return medians.get(workload, {}).get(label, {}).get(metric)


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def _depth(medians: Medians, kind: str) -> float | None:
    figures = medians.get("depth", {}).get("celeriac-gevent", {})
    keyed = sorted(((int(m.rsplit("@", 1)[1].replace(",", "")), v) for m, v in figures.items()
                    if m.startswith(kind)), key=lambda kv: kv[0])
    return keyed[-1][1] / keyed[0][1] if len(keyed) == 2 and keyed[0][1] else None


TARGETS = [
    Target("feeds", "feed hub, one gevent process: at least 0.95 of the ceiling",
           lambda m: _ratio(_get(m, "feeds", "celeriac-gevent", "feeds/s"),
                            _get(m, "feeds", CEILING, "feeds/s")),
           lambda v: v >= 0.95, "x ceiling"),
    Target("feeds", "feed hub, `--processes 2`: above 1.5x the one-process ceiling",
           lambda m: _ratio(_get(m, "feeds", "celeriac-gevent-p2", "feeds/s"),
                            _get(m, "feeds", CEILING, "feeds/s")),
           lambda v: v > 1.5, "x ceiling"),
    Target("noop", "no-op: at least 0.8 of the bare-pool ceiling",
           lambda m: _ratio(_get(m, "noop", "celeriac-gevent", "tasks/s"),
                            _get(m, "noop", CEILING, "tasks/s")),
           lambda v: v >= 0.8, "x ceiling"),
    Target("startup", "start-up: full speed within 0.2 s of the first task",
           lambda m: _get(m, "startup", "celeriac-gevent", "s first task to full speed"),
           lambda v: v <= 0.2, "s"),
    Target("startup", "start-up: the short run (first task to last) as fast as the no-op "
                      "run (at least 0.95 of it)",
           lambda m: _ratio(_get(m, "startup", "celeriac-gevent", "tasks/s"),
                            _get(m, "noop", "celeriac-gevent", "tasks/s")),
           lambda v: v >= 0.95, "x no-op rate"),
    Target("memory", "worker RSS under the feed run at c=1000: no more than Celery's",
           lambda m: _ratio(_get(m, "memory", "celeriac-gevent", "RSS under feeds MB"),
                            _get(m, "memory", "celery-gevent", "RSS under feeds MB")),
           lambda v: v <= 1.0, "x Celery"),
    Target("enqueue", "`.delay()` loop: at least 10,000/s on Redis",
           lambda m: _get(m, "enqueue", "celeriac-gevent", ".delay() loop /s"),
           lambda v: v >= 10_000, "/s"),
    Target("enqueue", "bulk: at least 50,000/s on Redis",
           lambda m: _get(m, "enqueue", "celeriac-gevent", "bulk /s"),
           lambda v: v >= 50_000, "/s"),
    Target("latency", "p50 enqueue-to-start under 1 ms",
           lambda m: _get(m, "latency", "celeriac-gevent", "p50 ms"),
           lambda v: v < 1.0, "ms"),
    Target("depth", "depth: enqueue rate at the large depth within 10% of the small",
           lambda m: _depth(m, "enqueue"), lambda v: v >= 0.9, "x"),
    Target("depth", "depth: drain rate at the large depth within 10% of the small",
           lambda m: _depth(m, "drain"), lambda v: v >= 0.9, "x"),
    Target("events", "`-E` costs no more than 10% of no-op throughput",
           lambda m: _ratio(_get(m, "events", "celeriac-gevent -E", "tasks/s"),
                            _get(m, "events", "celeriac-gevent", "tasks/s")),
           lambda v: v >= 0.9, "x without -E"),
]


def verdict(target: Target, medians: Medians) -> tuple[str, str]:
    """``(figure text, "met" / "NOT met" / "not measured")``."""
    value = target.figure(medians)
    if value is None:
        return "-", "not measured"
    text = f"{value:,.0f} {target.unit}" if value >= 100 else f"{value:.2f} {target.unit}"
    return text.strip(), "met" if target.met(value) else "NOT met"
