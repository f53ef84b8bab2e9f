"""Celeriac against Dramatiq, Celery and Huey on one loopback Redis, side by side.

Starts its own ``redis-server`` on a free port (no persistence, data in a temporary
directory) and, for each framework, one worker process with green threads, started
with that framework's own CLI:

* dramatiq  ``dramatiq-gevent benchtasks --processes 1 --threads C``
* celery    ``celery -A benchtasks worker -P gevent -c C --without-mingle --without-gossip``
* huey      ``huey_consumer benchtasks.huey -k greenlet -w C`` after ``monkey.patch_all()``
* celeriac  ``celeriac -A benchtasks worker -P gevent -c C``

The task does exactly one Redis ``INCR`` on a per-framework counter; results are off
everywhere. Measured per framework and run:

* ``enqueue/s``: N sequential ``.send()``/``.delay()`` calls in one plain thread;
* ``prefilled tasks/s``: those N messages, all queued before the worker starts,
  counted from the first ``INCR`` to the N-th (the counter is polled), so start-up
  and enqueueing do not count;
* ``running tasks/s``: the same with the worker already running and idle while a
  producer process enqueues N more (bounded by the producer on a small machine);
* ``p50``/``p90`` enqueue-to-start latency on the idle worker, one task at a time;
* celeriac only: the bulk-publish rate of N messages in one call, when the API exists.

Every figure is the median of ``--repeat`` runs; frameworks alternate within a run so
drift on a shared machine hits all of them. Ratios are against Dramatiq (above 1 is
better for rates, below 1 is better for latency), or against the first framework run
when Dramatiq is not.

``--signals`` does the same for ``celeriac-signals``, celeriac with one no-op receiver
connected to every task signal (publish, received, prerun, postrun, success, failure,
retry, revoked): what a Sentry- or OpenTelemetry-style integration costs.

``--results`` makes celeriac (and ``celeriac@REV``) store every task's result in the
Redis result backend, to measure what storing results costs a worker.

``--against REV`` runs ``celeriac@REV`` beside ``celeriac``: the same worker, imported
from a git worktree of revision REV of this repository (checked out in the work
directory and removed afterwards), for a before/after measurement of a hot-path change
in one run.

For every celeriac variant the prefilled stretch also reports ``worker CPU us/task``:
the CPU time the worker's processes (supervisor and children) spent per task over that
stretch, a steadier figure than the rate on a shared machine.

``--events`` measures what task events cost: it adds ``celeriac-E``, the same celeriac
worker started with ``-E`` (every task then records task-received, task-started and
task-succeeded in the broker's event stream), run beside plain ``celeriac`` in every
run, and reports the ratio. With only celeriac to run, no other framework's venv is
needed: the script runs in the interpreter that started it.

Dramatiq, Celery and Huey are not dependencies of celeriac: everything runs in
``bench/.venv-compare`` (created by ``bench/compare/setup.sh`` on first use, with
celeriac installed editable), into which this script re-executes itself.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from compare.frameworks import FRAMEWORKS as COMPETITORS
from compare.frameworks import Framework
from harness.procs import (
    BenchError,
    Worker,
    child_env,
    count_rate,
    exit_on_signal,
    free_port,
    tail,
)
from harness.procs import produce as harness_produce
from harness.servers import redis_server

__all__ = ["SETUP", "VENV", "BenchError", "Worker", "child_env", "count_rate", "exit_on_signal",
           "free_port", "redis_server", "tail"]

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-compare"
SETUP = BENCH / "compare" / "setup.sh"
PRODUCE = BENCH / "compare" / "produce.py"

def _with_task_events(celeriac: Framework) -> Framework:
    """The celeriac worker with ``-E``: the same task module, the same command plus ``-E``."""

    def command(bin_dir: Path, concurrency: int) -> list[str]:
        return [*celeriac.command(bin_dir, concurrency), "-E"]

    return replace(celeriac, name="celeriac-E", command=command)


#: A no-op receiver on every task signal, added to the task module by ``--signals``.
SIGNAL_RECEIVERS = '''

from celeriac import signals as _signals

_calls = [0]


def _receiver(sender=None, **kwargs):
    _calls[0] += 1


for _name in ("before_task_publish", "after_task_publish", "task_received", "task_prerun",
              "task_postrun", "task_success", "task_failure", "task_retry", "task_revoked"):
    getattr(_signals, _name).connect(_receiver, weak=False)
'''


def _with_signal_receivers(celeriac: Framework) -> Framework:
    """The celeriac worker with one receiver connected to each task signal."""
    return replace(celeriac, name="celeriac-signals", source=celeriac.source + SIGNAL_RECEIVERS)


#: celeriac variants measured beside plain celeriac: with -E (``--events``), with a
#: receiver on each task signal (``--signals``).
VARIANTS: dict[str, Framework] = {
    "celeriac-E": _with_task_events(COMPETITORS["celeriac"]),
    "celeriac-signals": _with_signal_receivers(COMPETITORS["celeriac"]),
}
#: Every framework by name.
FRAMEWORKS: dict[str, Framework] = {**COMPETITORS, **VARIANTS}
#: Frameworks that are celeriac, run from this interpreter when nothing else is asked for.
CELERIAC_ONLY = {"celeriac", *VARIANTS}

METRICS = ["enqueue/s", "prefilled tasks/s", "running tasks/s", "p50 latency ms",
           "p90 latency ms", "bulk enqueue/s", "worker CPU us/task"]
#: Metrics where lower is better (the ratio reads the other way).
LOWER_IS_BETTER = {"p50 latency ms", "p90 latency ms", "worker CPU us/task"}


# -- the venv ------------------------------------------------------------------------------
def ensure_compare_venv(force_setup: bool, names: list[str]) -> None:
    """Re-execute this script in ``bench/.venv-compare``, creating it first if needed
    (not when only celeriac runs and this interpreter has what it needs)."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve() and not force_setup:
        return
    if set(names) <= CELERIAC_ONLY and not force_setup and not python.exists():
        with suppress(importlib.metadata.PackageNotFoundError):
            for package in ("celeriac", "gevent", "redis"):
                importlib.metadata.version(package)
            return
    if force_setup or not python.exists():
        print(f"setting up {VENV} (bash {SETUP}) ...", file=sys.stderr, flush=True)
        subprocess.run(["bash", str(SETUP)], check=True)
    argv = [a for a in sys.argv[1:] if a != "--setup"]
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


def check_packages(names: list[str]) -> dict[str, str]:
    """Versions of the packages the chosen frameworks need; exits when one is missing."""
    packages = {"dramatiq": ["dramatiq"], "celery": ["celery", "kombu"], "huey": ["huey"],
                **{name: ["celeriac"] for name in CELERIAC_ONLY}}
    wanted = ["gevent", "greenlet", "redis"] + [p for n in names for p in packages[n]]
    versions: dict[str, str] = {}
    for package in wanted:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"{package} is missing from {VENV}: run bash {SETUP}") from None
    return versions


def celeriac_redis_missing() -> str | None:
    """Why celeriac cannot run on Redis yet, or None when its Redis broker imports."""
    probe = subprocess.run(
        [sys.executable, "-c", "from celeriac.brokers.redis import RedisBroker"],
        capture_output=True, text=True)
    if probe.returncode == 0:
        return None
    lines = probe.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {probe.returncode}"


# -- processes (the machinery lives in bench/harness/procs.py and servers.py) -----------------
def produce(directory: Path, action: str, count: int, timeout: float,
            pythonpath: str = "") -> dict[str, Any]:
    return harness_produce(sys.executable, directory, action, count, timeout, pythonpath)


# -- one framework, one run ----------------------------------------------------------------
def run_framework(name: str, url: str, root: Path, options: argparse.Namespace
                  ) -> dict[str, float]:
    import redis

    framework = FRAMEWORKS[name]
    directory = root / name
    framework.write_module(directory, url)
    client = redis.Redis.from_url(url)
    client.flushall()
    count, key = options.tasks, framework.counter_key()
    command = framework.command(Path(sys.executable).parent, options.concurrency)
    if not Path(command[0]).exists():  # an interpreter without the console script
        command = [sys.executable, "-m", Path(command[0]).name, *command[1:]]
    out: dict[str, float] = {}

    path = framework.pythonpath
    out["enqueue/s"] = produce(directory, "enqueue", count, options.timeout, path)["rate"]
    worker = Worker(command, directory, name, framework.pythonpath)
    try:
        cpu: list[float] = []
        out["prefilled tasks/s"] = count_rate(client, key, 0, count, worker, options.timeout,
                                              cpu if name in CELERIAC_ONLY else None)
        if cpu:
            out["worker CPU us/task"] = cpu[0] * 1e6
        producer = subprocess.Popen(
            [sys.executable, str(PRODUCE), str(directory), "enqueue", str(count)],
            cwd=directory, env=child_env(directory, path), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            out["running tasks/s"] = count_rate(client, key, count, 2 * count, worker,
                                                options.timeout)
        finally:
            stdout, stderr = producer.communicate(timeout=options.timeout)
        if producer.returncode != 0:
            raise BenchError(f"producer failed:\n{tail(stderr)}")
        out["running: producer enqueue/s"] = json.loads(stdout.strip().splitlines()[-1])["rate"]
        if options.latency_samples:
            samples = sorted(produce(directory, "latency", options.latency_samples,
                                     options.timeout, path)["samples"])
            out["p50 latency ms"] = 1000 * samples[len(samples) // 2]
            out["p90 latency ms"] = 1000 * samples[int(len(samples) * 0.9)]
    finally:
        worker.stop()

    if name == "celeriac" and not options.paired:
        client.flushall()
        bulk = produce(directory, "bulk", count, options.timeout)
        if "skipped" in bulk:
            out["bulk skipped"] = 1.0
            print(f"  celeriac bulk publish skipped: {bulk['skipped']}", flush=True)
        else:
            out["bulk enqueue/s"] = bulk["rate"]
            # the bulk-published messages must be real ones: a worker runs them all
            worker = Worker(command, directory, name)
            try:
                out["bulk-published prefilled tasks/s"] = count_rate(
                    client, key, 0, count, worker, options.timeout)
            finally:
                worker.stop()
    client.close()
    return out


# -- report --------------------------------------------------------------------------------
def cell(metric: str, value: float | None, base: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:,.1f}" if metric in LOWER_IS_BETTER else f"{value:,.0f}"
    if base:
        text += f" ({value / base:.2f}x)"
    return text


def print_table(medians: dict[str, dict[str, float]], names: list[str], base_name: str) -> None:
    base = medians.get(base_name, {})
    metrics = [m for m in METRICS if any(m in medians.get(n, {}) for n in names)]
    rows = [["framework", *metrics]]
    for name in names:
        values = medians.get(name, {})
        rows.append([name, *(cell(m, values.get(m), base.get(m)) for m in metrics)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(text.ljust(w) if i == 0 else text.rjust(w)
                        for i, (text, w) in enumerate(zip(row, widths, strict=True))))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("-c", "--concurrency", type=int, default=100,
                        help="green threads in the one worker process")
    parser.add_argument("--only", help="comma-separated frameworks, in table order "
                        f"({', '.join(FRAMEWORKS)}) [default: dramatiq,celery,huey,celeriac]")
    parser.add_argument("--latency-samples", type=int, default=200,
                        help="enqueue-to-start samples per run (0: skip)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds any one step may take")
    parser.add_argument("--json", type=Path, help="also write medians and runs here")
    parser.add_argument("--workdir", type=Path,
                        help="keep task modules, worker logs and Redis's directory here "
                             "(default: a temporary directory, removed)")
    parser.add_argument("--events", action="store_true",
                        help="also run celeriac with -E (celeriac-E) and report what task "
                             "events cost (default --only: celeriac,celeriac-E)")
    parser.add_argument("--signals", action="store_true",
                        help="also run celeriac with a receiver on every task signal "
                             "(celeriac-signals) and report what they cost")
    parser.add_argument("--results", action="store_true",
                        help="celeriac (and celeriac@REV) store every task's result in the "
                             "Redis result backend (the others keep results off)")
    parser.add_argument("--against", metavar="REV",
                        help="also run celeriac@REV, celeriac from a worktree of git revision "
                             "REV of this repository, and report its ratio to this checkout")
    parser.add_argument("--setup", action="store_true",
                        help=f"(re)install {VENV.name} first with {SETUP.name}")
    options = parser.parse_args()
    if options.results:  # before celeriac@REV copies celeriac
        source = COMPETITORS["celeriac"].source.replace("ignore_result=True", "ignore_result=False")
        FRAMEWORKS["celeriac"] = COMPETITORS["celeriac"] = replace(
            COMPETITORS["celeriac"], source=source)
    if options.against:
        # registered before the names are checked; its worktree is made in measure()
        name = f"celeriac@{options.against}"
        VARIANTS[name] = replace(COMPETITORS["celeriac"], name=name)
        FRAMEWORKS[name] = VARIANTS[name]
        CELERIAC_ONLY.add(name)
    paired = options.events or options.signals or bool(options.against)
    only = options.only or ("celeriac" if paired else "dramatiq,celery,huey,celeriac")
    options.names = [n.strip() for n in only.split(",") if n.strip()]
    for flag, variant in ((options.events, "celeriac-E"), (options.signals, "celeriac-signals"),
                          (options.against, f"celeriac@{options.against}")):
        if flag and variant not in options.names:
            options.names.append(variant)
    options.paired = paired
    if not options.names or any(n not in FRAMEWORKS for n in options.names):
        parser.error(f"--only takes some of {', '.join(FRAMEWORKS)}")
    if options.tasks < 100:
        parser.error("--tasks must be at least 100")
    if options.concurrency < 1 or options.repeat < 1:
        parser.error("--concurrency and --repeat must be at least 1")
    return options


def measure(active: list[str], options: argparse.Namespace
            ) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """Every run of every framework: ``(runs[name][metric] = values, errors)``."""
    runs: dict[str, dict[str, list[float]]] = {n: {} for n in active}
    errors: list[str] = []
    with ExitStack() as stack:
        if options.workdir:
            options.workdir.mkdir(parents=True, exist_ok=True)
            root = options.workdir.resolve()
        else:
            root = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="celeriac-redis-compare-")))
        url = stack.enter_context(redis_server(root))
        if options.against:
            name = f"celeriac@{options.against}"
            tree = stack.enter_context(worktree(options.against, root / "against"))
            FRAMEWORKS[name] = replace(FRAMEWORKS[name], pythonpath=str(tree))
        for run in range(options.repeat):
            # With --events the pair swaps places every run, so drift favours neither.
            for name in (active[::-1] if options.paired and run % 2 else active):
                try:
                    figures = run_framework(name, url, root / f"run{run + 1}", options)
                except (BenchError, subprocess.TimeoutExpired) as exc:
                    errors.append(f"run {run + 1} {name}: {exc}")
                    print(f"run {run + 1} {name}: FAILED: {exc}", flush=True)
                    continue
                for metric, value in figures.items():
                    runs[name].setdefault(metric, []).append(value)
                print(f"run {run + 1} {name:9} " + ", ".join(
                    f"{m} {v:,.1f}" for m, v in figures.items() if m != "bulk skipped"),
                    flush=True)
    return runs, errors


@contextmanager
def worktree(revision: str, directory: Path) -> Iterator[Path]:
    """A detached git worktree of ``revision`` of the repository this script is in,
    removed afterwards; yields the directory to put on the import path."""
    git = ["git", "-C", str(BENCH.parent)]
    subprocess.run([*git, "worktree", "add", "--detach", "--force", str(directory), revision],
                   check=True, capture_output=True)
    try:
        yield directory
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(directory)],
                       capture_output=True)
        subprocess.run([*git, "worktree", "prune"], capture_output=True)


def paired_ratios(runs: dict[str, dict[str, list[float]]], variant: str
                  ) -> dict[str, list[float]]:
    """``variant`` / celeriac per run, for the throughput metrics: each pair ran side by
    side in the same run, so the ratio is less exposed to drift than a ratio of medians.
    For ``celeriac@REV`` the other way round: this checkout / that revision."""
    plain, other = runs.get("celeriac", {}), runs.get(variant, {})
    if variant.startswith("celeriac@"):
        plain, other = other, plain
    return {metric: [e / p for p, e in zip(plain[metric], other[metric], strict=True)]
            for metric in ("prefilled tasks/s", "running tasks/s", "worker CPU us/task")
            if len(plain.get(metric, [])) == len(other.get(metric, [])) > 0}


def main() -> int:
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGHUP, exit_on_signal)
    options = parse_args()
    names: list[str] = options.names
    ensure_compare_venv(options.setup, names)
    versions = check_packages(names)
    skipped: dict[str, str] = {}
    if CELERIAC_ONLY & set(names):
        reason = celeriac_redis_missing()
        if reason is not None:
            for name in CELERIAC_ONLY & set(names):
                skipped[name] = f"celeriac.brokers.redis does not import: {reason}"
                print(f"skipping {name}: {skipped[name]}", flush=True)
    load_before = os.getloadavg()[0]
    runs, errors = measure([n for n in names if n not in skipped], options)
    load = (load_before, os.getloadavg()[0])
    medians = {name: {m: statistics.median(v) for m, v in metrics.items()}
               for name, metrics in runs.items()}
    base_name = "dramatiq" if "dramatiq" in names else names[0]
    print(f"\nmedians of {options.repeat} runs; {options.tasks:,} tasks of one Redis INCR; "
          f"one worker process, {options.concurrency} green threads; loopback Redis; "
          f"{os.cpu_count()} CPUs (1-min load average {load[0]:.1f} before, {load[1]:.1f} "
          f"after: above ~1 something else was running); ratios against {base_name}\n")
    if medians and any(medians.values()):
        print_table(medians, names, base_name)
    else:
        print("no figures: every run failed")
    for name, reason in skipped.items():
        print(f"\n{name}: skipped: {reason}")
    if "celeriac" in runs and "bulk skipped" in runs["celeriac"]:
        print("\nceleriac bulk enqueue/s: skipped (see the run lines above for why)")
    pairs = {variant: paired_ratios(runs, variant) for variant in VARIANTS if variant in runs}
    for variant, ratios_of in pairs.items():
        if ratios_of and variant.startswith("celeriac@"):
            print(f"\nthis checkout against {variant}: celeriac / {variant}, run by run "
                  "(median; a rate of 0.90 means this checkout is 10% slower, a CPU figure "
                  "of 1.10 that it spends 10% more per task)")
        elif ratios_of:
            print(f"\ncost of {variant}: {variant} / celeriac, run by run (median; 0.90 means "
                  "it costs 10%; a CPU figure of 1.10 means 10% more CPU per task)")
        for metric, ratios in ratios_of.items():
            print(f"  {metric:18} " + " ".join(f"{r:.2f}" for r in ratios)
                  + f"  (median {statistics.median(ratios):.2f})")
    print("\n" + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if options.json:
        options.json.write_text(json.dumps({
            "settings": {"tasks": options.tasks, "repeat": options.repeat,
                         "concurrency": options.concurrency, "cpus": os.cpu_count(),
                         "latency_samples": options.latency_samples, "load_average": load},
            "versions": versions, "skipped": skipped, "errors": errors,
            "medians": medians, "runs": runs, "paired_ratios": pairs}, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
