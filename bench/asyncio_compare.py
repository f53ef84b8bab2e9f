"""`-P asyncio` against its bounds and against `-P gevent`, side by side, on a loopback Redis.

Two workloads, each a set of variants run one after the other in every run (their order
rotated run to run), medians of ``--repeat`` runs, one markdown table:

* **sleep**: N tasks (default 3,000) queued first, each sleeping 0.5 s, at ``-c 1000``:
  ``asyncio``: ``await asyncio.sleep`` on ``-P asyncio``; ``gevent sync``: ``time.sleep``
  (patched: ``gevent.sleep``) on ``-P gevent``; ``gevent async``: the same ``async def``
  task as on ``-P asyncio``, run by ``-P gevent`` (each greenlet waits on the process's one
  loop thread). Tasks/s over the span (first start to last end, the tasks' own clocks)
  against the concurrency bound ``c / sleep`` (2,000/s). Two ceilings beside them, the
  same sleeps with no queue at all: ``ceiling: plain asyncio``, one loop running the
  coroutines ``c`` at a time (a semaphore); ``ceiling: bare gevent pool``, a
  ``gevent.pool.Pool(c)`` of patched ``time.sleep`` in a process of its own. What the
  event loop or the hub costs by itself, with nothing of a task queue around it.
* **noop**: the same N tasks returning at once (async on ``-P asyncio``, sync on
  ``-P gevent``): what a task costs the worker when nothing waits.
* **feeds**: F fetches (default 3,000) from ``examples/gevent/feedhub.py`` (0.5 s per
  answer), each parsed with ElementTree: ``ceiling``: one plain asyncio program fetching
  all F with aiohttp, 1,000 at a time, no queue (what the hub serves this machine);
  ``asyncio``: the ``async def`` task with aiohttp on ``-P asyncio``; ``gevent``: the sync
  task with ``requests`` on ``-P gevent`` (as ``examples/gevent``). Feeds/s over the span,
  against the ceiling.

Beside each rate: the worker's CPU per task, its threads' waits per task (voluntary
context switches: a thread that gives the GIL away, or waits for it, switches), the
seconds to the ``c``-th start (filling the empty pool) and the slot turnaround (how long
a slot whose task ended stays empty):
with tasks queued first, ``c`` tasks start together and end together, and the worker
settles each wave one task after another (docs/asyncio.md, "Figures").

``--against REV`` also runs every pool variant with celeriac imported from a git worktree
of revision REV (labelled ``@REV``), in the same runs: a before/after measurement of a
change, each run's pair side by side, with the ratios run by run under the table.

Everything is loopback: ``redis-server`` is started on a free port without persistence
(``bench/redis_compare.py``) and flushed before each variant; the worker is the real CLI,
one process (``--processes 1``), started after its tasks are queued.

    .venv/bin/python bench/asyncio_compare.py                      # 3 runs, both workloads
    .venv/bin/python bench/asyncio_compare.py --repeat 5 --only sleep
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from amqp_compare import feed_hub  # noqa: E402
from redis_compare import BenchError, Worker, redis_server, tail, worktree  # noqa: E402

#: The tasks module every worker imports; BENCH_REDIS names the broker and backend.
TASKS = '''
import asyncio, os, time
import xml.etree.ElementTree as ET

import aiohttp
import requests
from requests.adapters import HTTPAdapter

from celeriac import Celeriac

app = Celeriac("aiobench", broker=os.environ["BENCH_REDIS"], backend=os.environ["BENCH_REDIS"])
_sessions = {}
_requests = requests.Session()
_requests.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=1000))


def items(content):
    return len(ET.fromstring(content).find("channel").findall("item"))


@app.task
async def anap(seconds):
    started = time.time()
    await asyncio.sleep(seconds)
    return [started, time.time()]


@app.task
async def anoop(_):
    now = time.time()
    return [now, now]


@app.task
def noop(_):
    now = time.time()
    return [now, now]


@app.task
def nap(seconds):
    started = time.time()
    time.sleep(seconds)
    return [started, time.time()]


async def session():
    loop = asyncio.get_running_loop()
    if loop not in _sessions:
        _sessions[loop] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000), timeout=aiohttp.ClientTimeout(total=60))
    return _sessions[loop]


@app.task
async def afetch(url):
    started = time.time()
    async with (await session()).get(url) as response:
        response.raise_for_status()
        content = await response.read()
    return [started, time.time(), items(content)]


@app.task
def fetch(url):
    started = time.time()
    response = _requests.get(url, timeout=60)
    response.raise_for_status()
    return [started, time.time(), items(response.content)]
'''


@dataclass(frozen=True)
class Variant:
    """One measured line: a pool and a task, or (pool None) the bare client ceiling."""

    workload: str
    label: str
    pool: str | None
    task: str
    #: Put first on the worker's import path (``--against``: a worktree of another revision).
    pythonpath: str = ""


VARIANTS = [
    Variant("sleep", "ceiling: plain asyncio, no queue", None, "anap"),
    Variant("sleep", "ceiling: bare gevent pool, no queue", None, "nap"),
    Variant("sleep", "asyncio: await asyncio.sleep", "asyncio", "anap"),
    Variant("sleep", "gevent: time.sleep (sync)", "gevent", "nap"),
    Variant("sleep", "gevent: await asyncio.sleep", "gevent", "anap"),
    Variant("noop", "asyncio: async no-op", "asyncio", "anoop"),
    Variant("noop", "gevent: sync no-op", "gevent", "noop"),
    Variant("feeds", "ceiling: plain asyncio + aiohttp", None, "afetch"),
    Variant("feeds", "asyncio: aiohttp", "asyncio", "afetch"),
    Variant("feeds", "gevent: requests", "gevent", "fetch"),
]


def worker_command(pool: str, options: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "celeriac", "-A", "benchtasks", "worker", "-l", "WARNING",
            "-P", pool, "-c", str(options.concurrency), "--processes", "1"]


def run_worker(variant: Variant, module: Any, args: list[Any], options: argparse.Namespace,
               directory: Path) -> tuple[list[list[float]], float, float]:
    """Queue one task per ``args`` item, start the worker, collect the tasks' timestamps.

    Also the worker's CPU seconds (supervisor and child) from its first result to its
    last, per task after the first: what a task costs the worker, start-up excluded;
    and its threads' waits (:func:`waits`) per task over the same stretch.
    """
    assert variant.pool is not None
    task = getattr(module, variant.task)
    results = task.apply_many([(arg,) for arg in args])
    worker = Worker(worker_command(variant.pool, options), directory,
                    f"{variant.workload}-{variant.pool}-{variant.task}"
                    f"{'-against' if variant.pythonpath else ''}", variant.pythonpath)
    try:
        out = [results[0].get(timeout=options.timeout)]
        cpu, switched = worker.cpu_seconds(), waits(worker)
        for result in results[1:]:
            worker_alive(worker)
            out.append(result.get(timeout=options.timeout))
        per_task = max(1, len(results) - 1)
        now = waits(worker)
        # Per thread: one that ended meanwhile is not counted (never a negative figure);
        # one that started meanwhile counts from zero.
        switches = sum(count - switched.get(thread, 0) for thread, count in now.items())
        return out, (worker.cpu_seconds() - cpu) / per_task, switches / per_task
    finally:
        worker.stop()


def waits(worker: Worker) -> dict[tuple[int, int], int]:
    """Voluntary context switches of each thread of the worker's processes, by (pid, thread
    id) (Linux: each thread's ``/proc/<pid>/task/<tid>/status``; nothing elsewhere): how
    often a thread gave up its CPU to wait, above all for the GIL another thread of its
    process holds. A structural figure, little moved by the machine's load (involuntary
    switches are)."""
    import psutil

    try:
        root = psutil.Process(worker.proc.pid)
        pids = [root.pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return {}
    found: dict[tuple[int, int], int] = {}
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                text = status.read_text()
            except OSError:  # the thread or process ended meanwhile
                continue
            for line in text.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    found[(pid, int(status.parent.name))] = int(line.split()[1])
    return found


def worker_alive(worker: Worker) -> None:
    if worker.proc.poll() is not None:
        raise BenchError(f"the worker exited:\n{tail(worker.log.read_text(errors='replace'))}")


async def bare_fetches(urls: list[str], concurrency: int) -> list[list[float]]:
    """The hub's ceiling here: aiohttp in one plain loop, ``concurrency`` fetches at a time."""
    import xml.etree.ElementTree as ET

    import aiohttp

    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def one(url: str) -> list[float]:
            async with limit:
                started = time.time()
                async with client.get(url) as response:
                    response.raise_for_status()
                    content = await response.read()
                channel = ET.fromstring(content).find("channel")
                assert channel is not None
                return [started, time.time(), float(len(channel.findall("item")))]

        return await asyncio.gather(*(one(url) for url in urls))


async def bare_sleeps(seconds: float, count: int, concurrency: int) -> list[list[float]]:
    """The sleep workload's asyncio ceiling: ``count`` sleeps in one plain loop,
    ``concurrency`` at a time, no queue."""
    limit = asyncio.Semaphore(concurrency)

    async def one() -> list[float]:
        async with limit:
            started = time.time()
            await asyncio.sleep(seconds)
            return [started, time.time()]

    return await asyncio.gather(*(one() for _ in range(count)))


#: The sleep workload's gevent ceiling, run by a fresh interpreter (patching is process-wide):
#: argv is the sleep, the count and the concurrency; prints the stamps as JSON.
GEVENT_SLEEPS = """
from gevent import monkey
monkey.patch_all()
import json, sys, time
import gevent.pool

seconds, count, concurrency = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


def nap():
    started = time.time()
    time.sleep(seconds)
    return [started, time.time()]


pool = gevent.pool.Pool(concurrency)
print(json.dumps([job.get() for job in [pool.spawn(nap) for _ in range(count)]]))
"""


def no_queue(variant: Variant, args: list[Any], options: argparse.Namespace) -> list[list[float]]:
    """A no-queue ceiling's stamps: the feed fetches, or the sleeps on asyncio or gevent."""
    if variant.workload == "feeds":
        return asyncio.run(bare_fetches(args, options.concurrency))
    if variant.task == "anap":
        return asyncio.run(bare_sleeps(options.sleep, len(args), options.concurrency))
    done = subprocess.run([sys.executable, "-c", GEVENT_SLEEPS, str(options.sleep),
                           str(len(args)), str(options.concurrency)],
                          capture_output=True, text=True, timeout=options.timeout)
    if done.returncode:
        raise BenchError(f"the bare gevent pool failed:\n{tail(done.stderr)}")
    stamps: list[list[float]] = json.loads(done.stdout)
    return stamps


def refill(stamps: list[list[float]], concurrency: int) -> dict[str, float]:
    """How fast the worker fills its slots: ``ramp``, seconds from the first start to the
    ``concurrency``-th (filling the empty pool); ``turnaround``, the median over k of the
    ms from the k-th task end to the (k + concurrency)-th start: how long a slot that frees
    up stays empty (the finished task's result and ack, the next message's start)."""
    starts = sorted(s[0] for s in stamps)
    ends = sorted(s[1] for s in stamps)
    out = {"ramp": starts[min(len(starts), concurrency) - 1] - starts[0]}
    gaps = [starts[k + concurrency] - ends[k] for k in range(len(starts) - concurrency)]
    if gaps:
        out["turnaround"] = statistics.median(gaps) * 1000
    return out


def rate(stamps: list[list[float]]) -> float:
    """Tasks/s from the first start to the last end."""
    return len(stamps) / (max(s[1] for s in stamps) - min(s[0] for s in stamps))


def one_run(run: int, options: argparse.Namespace, root: Path, redis_url: str, hub: int,
            module: Any, client: Any) -> dict[str, float]:
    variants = [v for v in all_variants(options) if v.workload in options.only]
    shift = run % len(variants)
    out: dict[str, float] = {}
    for variant in variants[shift:] + variants[:shift]:
        client.flushall()
        args: list[Any] = {
            "sleep": lambda: [options.sleep] * options.tasks,
            "noop": lambda: [None] * options.tasks,
            "feeds": lambda: [f"http://127.0.0.1:{hub}/feeds/{n}.xml" for n in range(options.feeds)],
        }[variant.workload]()
        if variant.pool is None:
            stamps = no_queue(variant, args, options)
        else:
            stamps, cpu, switches = run_worker(variant, module, args, options, root)
            out[f"{variant.label}|cpu"] = cpu * 1000
            if Path("/proc/self/task").is_dir():
                out[f"{variant.label}|waits"] = switches
            if variant.workload != "noop":  # no-op tasks never fill the pool
                out.update({f"{variant.label}|{k}": v
                            for k, v in refill(stamps, options.concurrency).items()})
        if variant.workload == "feeds":
            parsed = sum(int(s[2]) for s in stamps)
            if parsed != 5 * len(args):
                raise BenchError(f"{variant.label}: parsed {parsed} items of {5 * len(args)}")
        out[variant.label] = rate(stamps)
        if options.workdir:  # the tasks' own start and end times, for a closer look
            twin = "-against" if variant.pythonpath else ""
            name = f"stamps-{variant.workload}-{variant.pool}-{variant.task}{twin}-{run + 1}.json"
            (root / name).write_text(json.dumps(stamps))
        print(f"  run {run + 1} {variant.label:36} {out[variant.label]:8.0f}/s", flush=True)
    return out


def all_variants(options: argparse.Namespace) -> list[Variant]:
    """:data:`VARIANTS`, and with ``--against`` each pool variant again on that revision."""
    if not options.against:
        return VARIANTS
    out = []
    for variant in VARIANTS:
        out.append(variant)
        if variant.pool is not None:
            out.append(replace(variant, label=f"{variant.label} @{options.against}",
                               pythonpath=options.against_path))
    return out


def against(runs: list[dict[str, float]], options: argparse.Namespace) -> str:
    """Each pool variant over its ``--against`` twin, run by run, and the median."""
    lines = [f"\nthis checkout against @{options.against}, run by run (median): a rate of "
             "1.05 is 5% faster here, a CPU figure of 0.95 5% less per task"]
    for variant in VARIANTS:
        twin = f"{variant.label} @{options.against}"
        if variant.pool is None or twin not in runs[0]:
            continue
        for key, what in (("", "tasks/s"), ("|cpu", "worker CPU")):
            ratios = [r[variant.label + key] / r[twin + key] for r in runs
                      if r.get(twin + key)]
            if ratios:
                lines.append(f"  {variant.label:36} {what:10} "
                             + " ".join(f"{x:.2f}" for x in ratios)
                             + f"  (median {statistics.median(ratios):.2f})")
    return "\n".join(lines)


def table(runs: list[dict[str, float]], options: argparse.Namespace) -> str:
    bound = options.concurrency / options.sleep
    medians = {label: statistics.median(r[label] for r in runs) for label in runs[0]}
    ceiling = medians.get("ceiling: plain asyncio + aiohttp")
    lines = ["| workload | variant | tasks/s (median) | against | runs | worker CPU ms/task "
             "| thread waits/task "
             f"| s to the {options.concurrency:,}th start | slot turnaround ms |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for variant in all_variants(options):
        if variant.label not in medians:
            continue
        value = medians[variant.label]
        against = "-"
        if variant.workload == "sleep":
            against = f"{value / bound:.2f} of the bound {bound:,.0f}/s"
        elif variant.workload == "feeds" and ceiling and variant.pool is not None:
            against = f"{value / ceiling:.2f} of the ceiling"
        every = ", ".join(f"{r[variant.label]:,.0f}" for r in runs)
        keys = ("cpu", "waits", "ramp", "turnaround")
        digits = (2, 1, 2, 0)
        extra = [medians.get(f"{variant.label}|{key}") for key in keys]
        cells = " | ".join("-" if v is None else f"{v:.{d}f}" for v, d in zip(extra, digits, strict=True))
        lines.append(f"| {variant.workload} | {variant.label} | {value:,.0f} | {against} | {every} "
                     f"| {cells} |")
    return "\n".join(lines)


def versions() -> str:
    import importlib.metadata as md

    names = ["gevent", "greenlet", "aiohttp", "requests", "redis", "uvloop"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            found.append(f"{name} absent")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return f"python {platform.python_version()}, " + ", ".join(found) + f", celeriac {commit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="sleep tasks per variant")
    parser.add_argument("--feeds", type=int, default=3000, help="feeds per variant")
    parser.add_argument("--concurrency", "-c", type=int, default=1000)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--latency", type=float, default=0.5, help="the feed hub's seconds per answer")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", type=lambda s: s.split(","), default=["sleep", "noop", "feeds"])
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--against", metavar="REV",
                        help="also run every pool variant on celeriac from a git worktree of REV")
    parser.add_argument("--workdir", type=Path,
                        help="keep the worker logs and each variant's task timestamps here")
    options = parser.parse_args()
    options.feed_latency, options.python = options.latency, Path(sys.executable)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="celeriac-aiobench-") as tmp:
        root = options.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        (root / "benchtasks.py").write_text(TASKS)
        runs = measure(options, root)
    load_after = os.getloadavg()[0]
    print(f"\nMedians of {options.repeat} runs, one worker process at -c {options.concurrency}, "
          f"loopback Redis; sleep: {options.tasks:,} tasks of {options.sleep} s; feeds: "
          f"{options.feeds:,} fetches of {options.latency} s latency from examples/gevent/feedhub.py; "
          f"{os.cpu_count()} CPUs (1-min load average {load_before:.1f} before, "
          f"{load_after:.1f} after).\n")
    print(table(runs, options))
    if options.against:
        print(against(runs, options))
    print(f"\n{versions()}")
    return 0


def measure(options: argparse.Namespace, root: Path) -> list[dict[str, float]]:
    import redis

    with ExitStack() as stack:
        url = stack.enter_context(redis_server(root))
        hub = stack.enter_context(feed_hub(options, root))
        options.against_path = ""
        if options.against:
            options.against_path = str(stack.enter_context(worktree(options.against,
                                                                    root / "against")))
        os.environ["BENCH_REDIS"] = url
        sys.path.insert(0, str(root))
        import benchtasks

        client = redis.Redis.from_url(url)
        runs = [one_run(run, options, root, url, hub, benchtasks, client)
                for run in range(options.repeat)]
        client.close()
        benchtasks.app.close()
    return runs


if __name__ == "__main__":
    sys.exit(main())
