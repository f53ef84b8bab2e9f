"""Child processes of a benchmark: workers started with their own CLI, producers, counters.

Moved here from ``bench/redis_compare.py`` and ``bench/amqp_compare.py`` (which import it):
one copy of the machinery every comparison needs. A worker is always the real CLI of its
framework in a process group of its own, its output in a log file; a producer step is a
fresh unpatched process (``bench/compare/produce.py``) so that no two frameworks' clients
ever share an interpreter. Figures are read off Redis counters the tasks bump, polled from
here, so the harness never imports a framework.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
PRODUCE = BENCH / "compare" / "produce.py"
#: Seconds without a counter moving before a measurement is given up (a worker whose tasks
#: all fail, or that stopped consuming, stays alive).
STALL = 60.0
#: Log lines worth reporting: errors, criticals, tracebacks (celeriac, Celery, Dramatiq forms).
TROUBLE = re.compile(r"\b(ERROR|CRITICAL|Traceback)\b|\] (ERROR|CRITICAL)", re.IGNORECASE)


class BenchError(RuntimeError):
    """A measurement could not be taken: a worker died, a step timed out, a count is off."""


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` of ``text``, indented, for an error message."""
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def child_env(directory: Path, pythonpath: str = "") -> dict[str, str]:
    """The environment of a worker or producer: this one without celeriac's settings, the
    generated task module's directory (and ``pythonpath``) first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(directory), pythonpath) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def produce(python: Path | str, directory: Path, action: str, count: int, timeout: float,
            pythonpath: str = "") -> dict[str, Any]:
    """One producer step (``bench/compare/produce.py``) in a fresh process; its JSON answer."""
    done = subprocess.run(
        [str(python), str(PRODUCE), str(directory), action, str(count)],
        cwd=directory, env=child_env(directory, pythonpath), capture_output=True, text=True,
        timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"producer {action} failed:\n{tail(done.stderr)}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class Worker:
    """One framework's worker, started with its own CLI; output goes to a log file."""

    def __init__(self, command: list[str], directory: Path, name: str,
                 pythonpath: str = "") -> None:
        self.log = directory / f"worker-{name}.log"
        self.started = time.time()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, cwd=directory,
                                         env=child_env(directory, pythonpath),
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def _tree(self) -> list[Any]:
        import psutil

        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """User and system CPU time of the worker and its live child processes."""
        import psutil

        total = 0.0
        with suppress(psutil.Error):
            for proc in self._tree():
                with suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        return total

    def rss_mb(self) -> float:
        """Resident memory of the worker and its child processes (supervisor included), MB."""
        import psutil

        total = 0
        with suppress(psutil.Error):
            for proc in self._tree():
                with suppress(psutil.Error):
                    total += proc.memory_info().rss
        return total / 2**20

    def open_files(self) -> int:
        """File descriptors open in the worker and its child processes (sockets, pipes,
        files; Linux and macOS), summed: under the feed run, mostly the task module's
        HTTP and Redis connections, one of each per task running at once."""
        import psutil

        total = 0
        with suppress(psutil.Error):
            for proc in self._tree():
                with suppress(psutil.Error):
                    total += proc.num_fds()
        return total

    def check(self) -> None:
        """Raise when the worker has exited (with its log's tail)."""
        if self.proc.poll() is not None:
            raise BenchError(f"worker exited with status {self.proc.returncode}:\n"
                             f"{tail(self.log.read_text(errors='replace'))}")

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL to the group after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # children of a worker that exited on its own, if any are left
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class PeakRss:
    """Samples a worker's RSS on a thread every 0.1 s until stopped; keeps the peak (MB),
    and the most file descriptors it held at once (:attr:`files`)."""

    def __init__(self, worker: Worker) -> None:
        self.worker, self.peak, self.files = worker, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.worker.rss_mb())
            self.files = max(self.files, self.worker.open_files())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


class Stall:
    """Raises when a counter has not moved for ``STALL`` seconds (three times that before it
    first moves: a worker starting on a million queued messages may take its time)."""

    def __init__(self, value: int) -> None:
        self.value, self.since, self.limit = value, time.monotonic(), 3 * STALL

    def check(self, value: int, target: int) -> None:
        now = time.monotonic()
        if value != self.value:
            self.value, self.since, self.limit = value, now, STALL
        elif now - self.since > self.limit:
            raise BenchError(f"no task completed for {self.limit:.0f} s, at {value} of {target} "
                             "(see the worker's log)")


def count_rate(client: Any, key: str, start: int, target: int, worker: Worker,
               timeout: float, cpu: list[float] | None = None) -> float:
    """Tasks/s while ``key`` goes from above ``start`` to ``target``.

    Polls the counter: tightly until the first task has run, then about four times
    per remaining stretch, tightly again near the end. The rate is taken from the
    first observed value above ``start`` to the moment ``target`` is seen. With
    ``cpu``, the worker's CPU seconds per task over the same stretch is appended to it.
    """
    deadline = time.monotonic() + timeout
    first_at: float | None = None
    first_value = start
    first_cpu = 0.0
    stalled = Stall(start)
    while True:
        value = int(client.get(key) or 0)
        now = time.perf_counter()
        stalled.check(value, target)
        if first_at is None and value > start:
            first_at, first_value = now, value
            first_cpu = worker.cpu_seconds() if cpu is not None else 0.0
        if value >= target:
            if first_at is None or value == first_value:
                raise BenchError("every task ran between two polls: use more tasks")
            if cpu is not None:
                cpu.append((worker.cpu_seconds() - first_cpu) / (value - first_value))
            return (target - first_value) / (now - first_at)
        if time.monotonic() > deadline:
            raise BenchError(f"timed out at {value - start} of {target - start} tasks")
        worker.check()
        if first_at is None or value == first_value:
            time.sleep(0.0005)
        else:
            rate = (value - first_value) / (now - first_at)
            time.sleep(min(0.05, max(0.0005, (target - value) / rate / 4)))


def wait_count(client: Any, key: str, target: int, worker: Worker | None, timeout: float,
               trace: list[tuple[float, int]] | None = None) -> float:
    """Wait until ``key`` reaches ``target``; the wall-clock time (``time.time()``) it was
    seen there. Polls every millisecond; with ``trace``, appends ``(time, value)`` at most
    every 10 ms (the start-up workload's curve)."""
    deadline = time.monotonic() + timeout
    last_traced = 0.0
    stalled = Stall(0)
    while True:
        value = int(client.get(key) or 0)
        now = time.time()
        stalled.check(value, target)
        if trace is not None and now - last_traced >= 0.01:
            trace.append((now, value))
            last_traced = now
        if value >= target:
            if trace is not None:
                trace.append((now, value))
            return now
        if time.monotonic() > deadline:
            raise BenchError(f"timed out at {value} of {target} tasks")
        if worker is not None:
            worker.check()
        time.sleep(0.001)


def wait_first(client: Any, key: str, worker: Worker, timeout: float, since: float) -> float:
    """Seconds from ``since`` (``time.perf_counter()``) until ``key`` is above 0."""
    deadline = time.monotonic() + timeout
    while int(client.get(key) or 0) == 0:
        worker.check()
        if time.monotonic() > deadline:
            raise BenchError(f"no task ran within {timeout:.0f} s of the worker's start")
        time.sleep(0.0005)
    return time.perf_counter() - since


def log_trouble(log: Path, seen: dict[str, int]) -> None:
    """Count the error lines of ``log`` into ``seen`` (line text without its timestamp,
    every number as ``N``, so that a thousand tasks failing alike make one line)."""
    if not log.exists():
        return
    for line in log.read_text(errors="replace").splitlines():
        if TROUBLE.search(line):
            key = re.sub(r"^\[?[\d\-: ,.T]+\]?\s*", "", line.strip())
            key = re.sub(r"\d+", "N", key)[:200]  # one line per kind, not per pid or task
            seen[key] = seen.get(key, 0) + 1


def exit_on_signal(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so workers and servers are stopped."""
    raise SystemExit(128 + signum)
