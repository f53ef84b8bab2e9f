"""A cluster-wide rate limit measured across two worker nodes, with unlimited tasks beside it.

Per broker (Redis on a loopback ``redis-server`` this script starts, and SQLite) and
per run, in a fresh temporary directory, two real ``celeriac worker`` nodes
(``-P threads -c 8`` each) run:

* ``unlimited alone``: N unlimited tasks (each appends its start time to a file),
  tasks/s from the first start to the last: the baseline;
* ``limited + unlimited``: L tasks with ``rate_limit="10/s"`` sent first, then the
  same N unlimited tasks at once. Measured: the limited tasks' rate over their
  span (``(L - 1) / (last start - first start)``, the issue's "10/s +- 10%"), the
  same rate over the limited starts after the last unlimited one (once the unlimited
  burst has drained, no due limited message waits behind it in the queue: the
  limiter's own rate), the most limited starts in any one-second window, and the
  unlimited tasks' tasks/s while the limited backlog is deferred in the broker, as a
  ratio of the baseline. Each burst is sent in one broker call per 1,000 messages.

Every figure is the median of ``--repeat`` runs. Run:
``.venv/bin/python bench/ratelimit.py [--limited 100] [--unlimited 2000] [--repeat 3]
[--brokers redis,sqlite]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.servers import redis_server

RATE = 10.0

TASKS = '''
import time
from celeriac import Celeriac

app = Celeriac("benchtasks")

def _note(path):
    with open(path, "a") as f:
        f.write(f"{time.time()}\\n")

@app.task(rate_limit="10/s", ignore_result=True)
def limited(path):
    _note(path)

@app.task(ignore_result=True)
def unlimited(path):
    _note(path)
'''


def fresh_app(directory: Path, url: str) -> Any:
    (directory / "benchtasks.py").write_text(TASKS)
    os.environ["CELERIAC_BROKER_URL"] = url
    os.environ["CELERIAC_RESULT_BACKEND"] = url
    sys.path.insert(0, str(directory))
    sys.modules.pop("benchtasks", None)
    import benchtasks

    sys.path.remove(str(directory))
    return benchtasks


def start_nodes(directory: Path, app: Any) -> list[subprocess.Popen[bytes]]:
    nodes = [subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "benchtasks", "worker",
                               "-l", "WARNING", "-P", "threads", "-c", "8", "-n", f"w{i}@%h"],
                              cwd=directory, stderr=subprocess.DEVNULL) for i in (1, 2)]
    deadline = time.monotonic() + 60
    while len(app.broker.workers()) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker nodes did not start")
        time.sleep(0.05)
    time.sleep(1.0)  # every worker process ready and fetching
    return nodes


def stop_nodes(nodes: list[subprocess.Popen[bytes]]) -> None:
    for node in nodes:
        node.send_signal(signal.SIGTERM)
    for node in nodes:
        node.wait(60)


def starts(path: Path, count: int, timeout: float = 600.0) -> list[float]:
    """The start times the tasks wrote to ``path``, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().split("\n")[:-1] if path.exists() else []
        if len(lines) >= count:
            return sorted(float(line) for line in lines)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(lines)} of {count} tasks ran in {timeout}s")
        time.sleep(0.05)


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


def most_in_a_second(times: list[float]) -> int:
    return max(sum(1 for t in times if first <= t < first + 1.0) for first in times)


def one_run(directory: Path, url: str, limited: int, unlimited: int) -> dict[str, float]:
    tasks = fresh_app(directory, url)
    nodes = start_nodes(directory, tasks.app)
    try:
        # Each burst goes out in one broker call per 1,000 (apply_many): the rates are the
        # workers', not those of a loop of delay() in this process.
        alone = directory / "alone.txt"
        tasks.unlimited.apply_many([(str(alone),)] * unlimited)
        baseline = rate(starts(alone, unlimited))
        slow, fast = directory / "limited.txt", directory / "beside.txt"
        tasks.limited.apply_many([(str(slow),)] * limited)
        tasks.unlimited.apply_many([(str(fast),)] * unlimited)
        beside_starts = starts(fast, unlimited)
        beside = rate(beside_starts)
        limited_starts = starts(slow, limited)
    finally:
        stop_nodes(nodes)
        tasks.app.close()
    # Once the unlimited burst has drained, no limited message waits behind it in the queue:
    # the limiter's own rate.
    after = [t for t in limited_starts if t > beside_starts[-1]]
    return {"limited runs/s": rate(limited_starts),
            "limited runs/s after the burst": rate(after) if len(after) > 1 else float("nan"),
            "most limited starts in 1 s": float(most_in_a_second(limited_starts)),
            "unlimited alone tasks/s": baseline,
            "unlimited beside tasks/s": beside,
            "beside/alone": beside / baseline}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limited", type=int, default=100)
    parser.add_argument("--unlimited", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--brokers", default="redis,sqlite")
    options = parser.parse_args()
    for broker in options.brokers.split(","):
        runs: dict[str, list[float]] = {}
        for run in range(options.repeat):
            with tempfile.TemporaryDirectory(prefix="celeriac-ratelimit-") as tmp:
                directory = Path(tmp)
                with contextlib.ExitStack() as stack:
                    url = (stack.enter_context(redis_server(directory)) if broker == "redis"
                           else f"sqlite:///{directory / 'bench.db'}")
                    figures = one_run(directory, url, options.limited, options.unlimited)
            for name, value in figures.items():
                runs.setdefault(name, []).append(value)
            print(f"{broker} run {run + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()),
                  flush=True)
        print(f"\n{broker}: medians of {options.repeat} runs, {options.limited} tasks at "
              f"rate_limit=10/s and {options.unlimited} unlimited, two nodes -P threads -c 8, "
              f"{os.cpu_count()} CPUs:")
        for name, values in runs.items():
            print(f"  {name:28} {statistics.median(values):10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
