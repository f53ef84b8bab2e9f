"""Celeriac against Celery and Dramatiq on one private RabbitMQ node, side by side.

Starts its own RabbitMQ node (``tests/rabbitserver.py``: free loopback ports, its own
directory, never the system's node), a loopback ``redis-server`` for the counters and
celeriac's state store (as ``redis_compare.py`` starts one), and the loopback feed hub
of ``examples/gevent/feedhub.py``. Each framework's worker is one process with green
threads, started with that framework's own CLI (``bench/compare/frameworks.py``):

* celery, celery-nohb, celery-quorum  ``celery -A benchtasks worker -P gevent -c C
  --without-mingle --without-gossip`` (py-amqp; celery-nohb: AMQP heartbeats off;
  celery-quorum: quorum queue and publisher confirms)
* dramatiq  ``dramatiq-gevent benchtasks --processes 1 --threads C`` (RabbitmqBroker, pika)
* celeriac  ``celeriac -A benchtasks worker -P gevent -c C`` (``amqp://``)

Measured per framework and run, each phase on a fresh vhost and a flushed Redis:

* ``enqueue/s``: N sequential ``.delay()``/``.send()`` calls in one plain process;
* ``no-op tasks/s``: those N messages (one Redis ``INCR`` each), all queued before the
  worker starts, counted from the first ``INCR`` to the N-th at ``-c C`` (100);
* ``start s``: from starting the worker's CLI to the first ``INCR`` (with the queue full);
* ``worker RSS MB``: the resident memory of the worker's processes (summed over the
  process tree, so shared pages count twice where there are several) when the N-th
  task has run;
* ``p50``/``p90 latency ms``: enqueue-to-start on the idle worker, one task at a time;
* ``feeds/s``: F feed tasks (GET from the hub with 0.5 s latency, parse, ``INCR``),
  queued first, run at ``-c 1000``, first to F-th; ``feeds/s incl. start`` counts from
  starting the worker, the figure a user sees for a short burst;
* celeriac only: ``bulk enqueue/s`` (``Task.apply_many`` of N - 1 messages in one call,
  after one untimed ``.delay()`` has connected and declared the queue) and
  ``bulk-published tasks/s``, a worker running those N (proof they are real messages).

Every figure is the median of ``--repeat`` runs; the frameworks' order rotates from run
to run so drift on a shared machine hits all of them. Ratios are against Celery (above
1 is better for rates, below 1 for start-up, memory and latency). Worker logs are
scanned after every phase: error lines and tracebacks are reported under the table.

The orchestration runs in the interpreter that starts this script (the project's venv:
it needs ``redis``, ``psutil`` and ``tests/rabbitserver.py``); producers and workers run
in the compare venv (``bench/.venv-compare``, ``--venv``; created by
``bench/compare/setup.sh``), with this checkout's celeriac put first on their import
path, so the celeriac measured is the one beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))  # rabbitserver, redisserver

from compare.amqp_frameworks import FRAMEWORKS  # noqa: E402 - after the path
from harness.procs import (  # noqa: E402
    BenchError,
    Worker,
    child_env,
    count_rate,
    exit_on_signal,
    log_trouble,
    tail,
    wait_first,
)
from harness.servers import feed_hub as harness_feed_hub  # noqa: E402
from harness.servers import redis_server  # noqa: E402
from rabbitserver import RabbitServer, find_rabbitmq  # noqa: E402
from redis_compare import SETUP, VENV  # noqa: E402

PRODUCE = BENCH / "compare" / "produce.py"

METRICS = ["enqueue/s", "no-op tasks/s", "start s", "worker RSS MB", "p50 latency ms",
           "p90 latency ms", "feeds/s", "feeds/s incl. start", "bulk enqueue/s",
           "bulk-published tasks/s"]
LOWER_IS_BETTER = {"start s", "worker RSS MB", "p50 latency ms", "p90 latency ms"}


# -- processes -----------------------------------------------------------------------------
def produce(options: argparse.Namespace, directory: Path, action: str, count: int
            ) -> dict[str, Any]:
    """One producer step in a fresh unpatched process of the compare venv."""
    done = subprocess.run(
        [str(options.python), str(PRODUCE), str(directory), action, str(count)],
        cwd=directory, env=child_env(directory, str(REPO)), capture_output=True, text=True,
        timeout=options.timeout)
    if done.returncode != 0:
        raise BenchError(f"producer {action} failed:\n{tail(done.stderr)}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def feed_hub(options: argparse.Namespace, root: Path) -> Iterator[int]:
    """``examples/gevent/feedhub.py`` on a free loopback port (``harness.servers``)."""
    with harness_feed_hub(options.python, root, options.feed_latency) as port:
        yield port


def rss_mb(worker: Worker) -> float:
    """Resident memory of the worker and its child processes, MB."""
    return worker.rss_mb()


# -- one framework, one run ----------------------------------------------------------------
class Phase:
    """One measured stretch: a fresh vhost, a flushed Redis, the module written for it."""

    def __init__(self, name: str, server: RabbitServer, client: Any, redis_url: str,
                 hub_port: int, directory: Path, options: argparse.Namespace) -> None:
        self.framework = FRAMEWORKS[name]
        self.options, self.client, self.directory = options, client, directory
        client.flushall()
        self.framework.write_amqp_module(directory, server.url(server.vhost()), redis_url,
                                         hub_port)

    def worker(self, concurrency: int, label: str) -> Worker:
        command = self.framework.command(self.options.python.parent, concurrency)
        return Worker(command, self.directory, f"{self.framework.name}-{label}", str(REPO))

    def run(self, key: str, count: int, concurrency: int, label: str, trouble: dict[str, int],
            after: Any = None) -> dict[str, float]:
        """Start a worker on the queued ``count`` tasks: start-up s, tasks/s, wall tasks/s."""
        started = time.perf_counter()
        worker = self.worker(concurrency, label)
        try:
            first = wait_first(self.client, key, worker, self.options.timeout, started)
            rate = count_rate(self.client, key, 0, count, worker, self.options.timeout)
            out = {"start": first, "rate": rate,
                   "wall": count / (time.perf_counter() - started)}
            if after is not None:
                out.update(after(worker))
            return out
        finally:
            worker.stop()
            log_trouble(worker.log, trouble)


def run_framework(name: str, server: RabbitServer, redis_url: str, hub_port: int, root: Path,
                  options: argparse.Namespace, trouble: dict[str, int]) -> dict[str, float]:
    import redis

    client = redis.Redis.from_url(redis_url)
    directory = root / name
    framework = FRAMEWORKS[name]
    out: dict[str, float] = {}
    try:
        phase = Phase(name, server, client, redis_url, hub_port, directory, options)
        out["enqueue/s"] = produce(options, directory, "enqueue", options.tasks)["rate"]

        def after_noop(worker: Worker) -> dict[str, float]:
            extra = {"rss": rss_mb(worker)}
            if options.latency_samples:
                samples = sorted(produce(options, directory, "latency",
                                         options.latency_samples)["samples"])
                extra["p50"] = 1000 * samples[len(samples) // 2]
                extra["p90"] = 1000 * samples[int(len(samples) * 0.9)]
            return extra

        noop = phase.run(framework.counter_key(), options.tasks, options.concurrency, "noop",
                         trouble, after_noop)
        out["no-op tasks/s"], out["start s"] = noop["rate"], noop["start"]
        out["worker RSS MB"] = noop["rss"]
        if "p50" in noop:
            out["p50 latency ms"], out["p90 latency ms"] = noop["p50"], noop["p90"]

        if options.feeds:
            phase = Phase(name, server, client, redis_url, hub_port, directory, options)
            produce(options, directory, "feeds", options.feeds)
            feeds = phase.run(framework.feeds_key(), options.feeds, options.feed_concurrency,
                              "feeds", trouble)
            out["feeds/s"], out["feeds/s incl. start"] = feeds["rate"], feeds["wall"]

        if framework.name == "celeriac" and not options.no_bulk:
            phase = Phase(name, server, client, redis_url, hub_port, directory, options)
            out["bulk enqueue/s"] = produce(options, directory, "warm-bulk",
                                             options.tasks)["rate"]
            bulk = phase.run(framework.counter_key(), options.tasks, options.concurrency,
                             "bulk", trouble)
            out["bulk-published tasks/s"] = bulk["rate"]
    finally:
        client.close()
    return out


# -- report --------------------------------------------------------------------------------
def cell(metric: str, value: float | None, base: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:,.2f}" if metric == "start s" else (
        f"{value:,.1f}" if metric in LOWER_IS_BETTER else f"{value:,.0f}")
    if base:
        text += f" ({value / base:.2f}x)"
    return text


def markdown(medians: dict[str, dict[str, float]], names: list[str], base_name: str) -> str:
    """Metrics down, frameworks across; each cell ``median (ratio to base)``."""
    base = medians.get(base_name, {})
    metrics = [m for m in METRICS if any(m in medians.get(n, {}) for n in names)]
    lines = ["| metric | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for metric in metrics:
        cells = [cell(metric, medians.get(n, {}).get(metric), base.get(metric)) for n in names]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions(options: argparse.Namespace, server: RabbitServer) -> dict[str, str]:
    """Versions of the peers in the compare venv, of this checkout and of RabbitMQ."""
    packages = ["celery", "kombu", "amqp", "dramatiq", "pika", "gevent", "redis"]
    probe = ("import importlib.metadata as m, json, sys\n"
             f"print(json.dumps({{p: m.version(p) for p in {packages!r}}}))\n")
    done = subprocess.run([str(options.python), "-c", probe], capture_output=True, text=True,
                          check=True)
    found: dict[str, str] = json.loads(done.stdout)
    found["python"] = subprocess.run(
        [str(options.python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True).stdout.strip()
    found["rabbitmq"] = server.ctl("version").stdout.strip()
    found["celeriac"] = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True, text=True).stdout.strip()
    return found


def summary(options: argparse.Namespace, found: dict[str, str], load: tuple[float, float],
            base_name: str) -> str:
    return (f"Medians of {options.repeat} runs on one private RabbitMQ {found['rabbitmq']} node "
            f"(loopback); no-op: {options.tasks:,} tasks of one Redis INCR at "
            f"-c {options.concurrency}; feeds: {options.feeds:,} fetches of "
            f"{options.feed_latency} s latency at -c {options.feed_concurrency}; one worker "
            f"process with gevent green threads each; {os.cpu_count()} CPUs (1-min load "
            f"average {load[0]:.1f} before, {load[1]:.1f} after); Python {found['python']}; "
            f"ratios against {base_name}.")


# -- main ----------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks per measurement")
    parser.add_argument("--feeds", type=int, default=3_000, help="feed tasks per run (0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("-c", "--concurrency", type=int, default=100,
                        help="green threads for the no-op tasks")
    parser.add_argument("--feed-concurrency", type=int, default=1000,
                        help="green threads for the feed tasks")
    parser.add_argument("--feed-latency", type=float, default=0.5,
                        help="seconds the feed hub takes per answer")
    parser.add_argument("--latency-samples", type=int, default=100,
                        help="enqueue-to-start samples per run (0: skip)")
    parser.add_argument("--only", default="celery,celery-nohb,celery-quorum,dramatiq,celeriac",
                        help=f"comma-separated frameworks, in table order ({', '.join(FRAMEWORKS)})")
    parser.add_argument("--no-bulk", action="store_true", help="skip celeriac's apply_many")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds any one step may take")
    parser.add_argument("--venv", type=Path, default=VENV,
                        help=f"the venv with Celery, Dramatiq and pika [default: {VENV}]")
    parser.add_argument("--out", type=Path, help="write the markdown table (and notes) here")
    parser.add_argument("--json", type=Path, help="also write medians and runs here")
    parser.add_argument("--workdir", type=Path,
                        help="keep task modules, worker logs and the servers' files here "
                             "(default: a temporary directory, removed)")
    options = parser.parse_args()
    options.names = [n.strip() for n in options.only.split(",") if n.strip()]
    if not options.names or any(n not in FRAMEWORKS for n in options.names):
        parser.error(f"--only takes some of {', '.join(FRAMEWORKS)}")
    if options.tasks < 100 or options.repeat < 1 or options.concurrency < 1:
        parser.error("--tasks must be at least 100, --repeat and -c at least 1")
    options.python = options.venv.absolute() / "bin" / "python"
    if not options.python.exists():
        parser.error(f"{options.python} is missing: run bash {SETUP} (or give --venv)")
    return options


def measure(options: argparse.Namespace, stack: ExitStack, root: Path
            ) -> tuple[dict[str, dict[str, list[float]]], list[str], dict[str, dict[str, int]],
                       dict[str, str]]:
    """Every run of every framework: runs[name][metric] = values, errors, log trouble."""
    binaries = find_rabbitmq()
    if binaries is None:
        raise SystemExit("rabbitmq-server not found (apt-get install rabbitmq-server, or set "
                         "CELERIAC_RABBITMQ_DIR)")
    redis_url = stack.enter_context(redis_server(root))
    server = stack.enter_context(RabbitServer(root / "rabbit", binary_dir=binaries))
    print(f"RabbitMQ node up in {server.start_seconds:.1f} s on port {server.port}", flush=True)
    hub_port = stack.enter_context(feed_hub(options, root))
    found = versions(options, server)
    names: list[str] = options.names
    runs: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    trouble: dict[str, dict[str, int]] = {n: {} for n in names}
    errors: list[str] = []
    for run in range(options.repeat):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            try:
                figures = run_framework(name, server, redis_url, hub_port,
                                        root / f"run{run + 1}", options, trouble[name])
            except (BenchError, subprocess.TimeoutExpired) as exc:
                errors.append(f"run {run + 1} {name}: {exc}")
                print(f"run {run + 1} {name}: FAILED: {exc}", flush=True)
                continue
            for metric, value in figures.items():
                runs[name].setdefault(metric, []).append(value)
            print(f"run {run + 1} {name:13} "
                  + ", ".join(f"{m} {v:,.2f}" for m, v in figures.items()), flush=True)
    return runs, errors, trouble, found


def main() -> int:
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGHUP, exit_on_signal)
    options = parse_args()
    names: list[str] = options.names
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        if options.workdir:
            options.workdir.mkdir(parents=True, exist_ok=True)
            root = options.workdir.resolve()
        else:
            root = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="celeriac-amqp-compare-")))
        runs, errors, trouble, found = measure(options, stack, root)
    load = (load_before, os.getloadavg()[0])
    medians = {name: {m: statistics.median(v) for m, v in metrics.items()}
               for name, metrics in runs.items()}
    base_name = "celery" if "celery" in names else names[0]
    report = [summary(options, found, load, base_name), "", markdown(medians, names, base_name),
              "", ", ".join(f"{k} {v}" for k, v in found.items())]
    for name, lines in trouble.items():
        for line, count in lines.items():
            report.append(f"\n{name} worker log ({count}x): {line}")
    for error in errors:
        report.append(f"\nFAILED {error}")
    text = "\n".join(report)
    print("\n" + text)
    if options.out:
        options.out.write_text(text + "\n")
    if options.json:
        options.json.write_text(json.dumps({
            "settings": {k: v for k, v in vars(options).items() if k not in ("out", "json",
                                                                            "workdir", "venv",
                                                                            "python")},
            "versions": found, "load_average": load, "errors": errors, "log_trouble": trouble,
            "medians": medians, "runs": runs}, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
