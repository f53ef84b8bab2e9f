"""PNG charts beside the report (``docs/benchmarks/*.png``), one per workload.

Drawn with matplotlib (a dependency of the bench venv only) on the Agg backend: one
horizontal bar per system for each column of the workload's table, the ceiling drawn as a
dashed line where the workload has one. Without matplotlib there are no charts and the
report says nothing about them (the tables hold every figure).
"""

from __future__ import annotations

from pathlib import Path

from .report import Outcome, metrics_of
from .workloads import WORKLOADS


def draw(outcome: Outcome, directory: Path, relative_to: Path) -> dict[str, str]:
    """One PNG per workload with figures; ``{workload: path relative to the report}``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    medians = outcome.medians()
    made: dict[str, str] = {}
    for name in outcome.workloads:
        workload = WORKLOADS[name]
        figures = medians.get(name, {})
        ceiling_label = workload.ceiling
        metrics = [m for m in metrics_of(workload, outcome.sizes)
                   if any(m in v for label, v in figures.items() if label != ceiling_label)]
        if not metrics:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 1.4 + 0.42 * len(figures)),
                                 squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            labels = [label for label in outcome.labels.get(name, [])
                      if label != ceiling_label and metric in figures.get(label, {})]
            values = [figures[label][metric] for label in labels]
            colours = ["#2a7" if label.startswith("celeriac") else "#888" for label in labels]
            ax.barh(labels[::-1], values[::-1], color=colours[::-1])
            ceiling = figures.get(ceiling_label, {}).get(metric)
            if ceiling:
                ax.axvline(ceiling, linestyle="--", color="#c33", label="ceiling")
                ax.legend(loc="lower right", fontsize=7)
            ax.set_title(metric, fontsize=9)
            ax.tick_params(labelsize=7)
        fig.suptitle(workload.title + (" (smoke run)" if outcome.quick else ""), fontsize=10)
        fig.tight_layout()
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made[name] = str(path.relative_to(relative_to))
    return made
