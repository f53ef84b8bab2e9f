"""Green-pool throughput on the SQLite broker: N tasks that each sleep 0.5 s.

Runs the real CLI worker (``-P gevent -c 1000`` by default) and reports, as medians
of ``--repeat`` runs:

* completions/s from the first completion to the last, ``(N - 1) / (last - first)``;
* tasks/s over the whole span, ``N / (last completion - first start)``, whose
  ceiling is the concurrency bound ``c / sleep`` (2000/s for c=1000 and 0.5 s);
* the worker process's peak resident memory while busy.

Starts and completions are the tasks' own timestamps, so worker start-up and the
producer do not count.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

TASKS = '''
import time
from celeriac import Celeriac

app = Celeriac("napping")

@app.task
def nap(seconds):
    started = time.time()
    time.sleep(seconds)
    return started
'''


def peak_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    """Sample the children of ``pid`` until ``stop``; keep the largest RSS seen."""
    parent = psutil.Process(pid)
    peak = 0
    while not stop.is_set():
        try:
            for child in parent.children():
                peak = max(peak, child.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out.append(peak)


def one_run(count: int, concurrency: int, seconds: float, pool: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="celeriac-gevent-bench-") as tmp:
        directory = Path(tmp)
        (directory / "napping.py").write_text(TASKS)
        url = f"sqlite:///{directory / 'bench.db'}"
        os.environ["CELERIAC_BROKER_URL"] = os.environ["CELERIAC_RESULT_BACKEND"] = url
        sys.path.insert(0, str(directory))
        sys.modules.pop("napping", None)
        import napping

        sys.path.remove(str(directory))
        results = [napping.nap.delay(seconds) for _ in range(count)]
        worker = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", "napping", "worker", "-l", "WARNING",
             "-P", pool, "-c", str(concurrency)], cwd=directory)
        stop, peaks = threading.Event(), []
        sampler = threading.Thread(target=peak_rss, args=(worker.pid, stop, peaks))
        sampler.start()
        try:
            starts = [r.get(timeout=600) for r in results]
        finally:
            stop.set()
            sampler.join()
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        backend: Any = napping.app.backend
        done = sorted(backend.get(r.id).date_done for r in results)
        napping.app.close()
    return {
        "completions/s": (count - 1) / (done[-1] - done[0]),
        "tasks/s over span": count / (done[-1] - min(starts)),
        "bound tasks/s": concurrency / seconds,
        "peak RSS MiB": peaks[0] / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--concurrency", "-c", type=int, default=1000)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--pool", default="gevent")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    runs: dict[str, list[float]] = {}
    for run in range(options.repeat):
        figures = one_run(options.tasks, options.concurrency, options.sleep, options.pool)
        for name, value in figures.items():
            runs.setdefault(name, []).append(value)
        print(f"run {run + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()),
              flush=True)
    print(f"\nmedians of {options.repeat} runs: {options.tasks} tasks sleeping {options.sleep}s, "
          f"-P {options.pool} -c {options.concurrency}, SQLite broker, {os.cpu_count()} CPUs")
    for name, values in runs.items():
        print(f"  {name:20} {statistics.median(values):10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
