"""Worker throughput, enqueue rate and latency on the embedded SQLite broker.

Starts the real ``celeriac worker`` CLI in a temporary directory, as a user would.
Throughput is measured from the first stored completion to the last (``date_done``
of each result), so worker start-up does not count; every figure is the median of
``--repeat`` runs.
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
from pathlib import Path
from typing import Any

TASKS = '''
import time
from celeriac import Celeriac

app = Celeriac("benchtasks")

@app.task
def noop():
    return None

@app.task
def started_after(sent_at):
    return time.time() - sent_at
'''


def start_worker(directory: Path, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "celeriac", "-A", "benchtasks", "worker", "-l", "WARNING", *args],
        cwd=directory, stderr=subprocess.PIPE)
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def wait_ready(app: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.broker.workers():
            return
        time.sleep(0.05)
    raise RuntimeError("worker did not start")


def fresh_app(directory: Path) -> Any:
    (directory / "benchtasks.py").write_text(TASKS)
    url = f"sqlite:///{directory / 'bench.db'}"
    os.environ["CELERIAC_BROKER_URL"] = url
    os.environ["CELERIAC_RESULT_BACKEND"] = url
    sys.path.insert(0, str(directory))
    sys.modules.pop("benchtasks", None)
    import benchtasks

    sys.path.remove(str(directory))
    return benchtasks


def enqueue_rate(tasks: Any, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        tasks.noop.delay()
    return count / (time.perf_counter() - started)


def throughput(directory: Path, tasks: Any, count: int, pool_args: list[str]) -> float:
    results = [tasks.noop.delay() for _ in range(count)]
    worker = start_worker(directory, *pool_args)
    try:
        results[-1].get(timeout=600)
        for result in results:
            result.get(timeout=600)
    finally:
        stop_worker(worker)
    backend = tasks.app.backend
    done = sorted(backend.get(r.id).date_done for r in results)  # type: ignore[union-attr]
    return (count - 1) / (done[-1] - done[0])


def latency(directory: Path, tasks: Any, count: int) -> list[float]:
    worker = start_worker(directory, "-P", "threads", "-c", "8")
    try:
        wait_ready(tasks.app)
        time.sleep(1.0)
        samples = []
        for _ in range(count):
            samples.append(tasks.started_after.delay(time.time()).get(timeout=30))
            time.sleep(0.02)
    finally:
        stop_worker(worker)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    runs: dict[str, list[float]] = {"enqueue/s": [], "threads -c 8 tasks/s": [],
                                    "prefork -c 2 tasks/s": [], "p50 latency ms": [],
                                    "p90 latency ms": []}
    for run in range(options.repeat):
        with tempfile.TemporaryDirectory(prefix="celeriac-bench-") as tmp:
            directory = Path(tmp)
            tasks = fresh_app(directory)
            runs["enqueue/s"].append(enqueue_rate(tasks, options.tasks))
            tasks.app.broker.purge(None)
            runs["threads -c 8 tasks/s"].append(
                throughput(directory, tasks, options.tasks, ["-P", "threads", "-c", "8"]))
            runs["prefork -c 2 tasks/s"].append(
                throughput(directory, tasks, options.tasks, ["-P", "prefork", "-c", "2"]))
            samples = sorted(latency(directory, tasks, options.latency_samples))
            runs["p50 latency ms"].append(1000 * samples[len(samples) // 2])
            runs["p90 latency ms"].append(1000 * samples[int(len(samples) * 0.9)])
            tasks.app.close()
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()),
              flush=True)
    print(f"\nmedians of {options.repeat} runs, {options.tasks} no-op tasks, SQLite broker "
          f"and results, {os.cpu_count()} CPUs:")
    summary = {name: statistics.median(values) for name, values in runs.items()}
    for name, value in summary.items():
        print(f"  {name:24} {value:10.1f}")
    if options.json:
        options.json.write_text(json.dumps({"medians": summary, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
