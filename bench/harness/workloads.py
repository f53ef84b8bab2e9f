"""The workloads of issue 15: what each measures, how, and on which systems.

Each workload is a list of entries (the ceiling, when it has one, and the systems it
applies to), each a function that takes one measurement in a fresh directory and returns
its figures. The runner (``run.py``) runs every entry of every workload once per run,
rotating their order from run to run, and keeps the median of each figure.

Throughput counts from the first task's start to the last completion, with every task
queued before the worker starts (except in start-up, which times the worker's start):
feeds from the first task's own ``SET start NX`` to the moment the counter reaches N;
no-op tasks (whose start and end are microseconds apart) from the first ``INCR`` seen to
the N-th. The ceilings run the same bodies (``tasks.HEADER``) in a bare gevent pool.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .context import Context, Sizes
from .procs import BenchError, PeakRss, Worker, count_rate, wait_count
from .servers import rabbitmq_missing
from .systems import SYSTEMS, System

COUNTER, START = "bench:count", "bench:start"
#: The system the bare ceilings borrow their module header from (only the bodies run).
BARE = replace(SYSTEMS["celeriac-gevent"], name="ceiling", framework="bare")
CEILING = "ceiling (bare gevent pool)"
#: The enqueue workload's ceiling: no framework, one Redis round trip per message.
ROUNDTRIP = "ceiling (bare redis-py LPUSH)"
#: The latency workload's ceiling: a push and a blocking pop, no framework.
BARE_POP = "ceiling (bare BLPOP)"
#: Where the memory workload's bare run waits for its start: ``ceiling.py``'s ``GO`` (not
#: imported: that module monkey-patches the process it is imported into).
BARE_GO = "bench:bare-go"

Measure = Callable[[Context, Path], dict[str, float]]


@dataclass(frozen=True)
class Entry:
    """One line of a workload's table."""

    label: str
    measure: Measure | None
    #: Why this line has no figures (the workload does not apply), when ``measure`` is None.
    skipped: str = ""


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    #: The columns of its table, in order.
    metrics: list[str]
    #: How it is measured, for the report (given the sizes).
    method: Callable[[Sizes], str]
    entries: Callable[[list[System]], list[Entry]]
    #: Columns where lower is better.
    lower: frozenset[str] = field(default_factory=frozenset)
    #: The column reported as a ratio to the ceiling's, when the workload has a ceiling.
    ratio_of: str | None = None
    #: The label of its ceiling's line.
    ceiling: str = CEILING


def _per_system(workload: str, systems: list[System], make: Callable[[System], Measure]
                ) -> list[Entry]:
    return [Entry(s.name, make(s)) if s.applies(workload)
            else Entry(s.name, None, s.not_applicable[workload]) for s in systems]


# -- feed hub ---------------------------------------------------------------------------------
def feeds_ceiling(ctx: Context, directory: Path) -> dict[str, float]:
    sizes = ctx.sizes
    ctx.prepare(BARE, directory, sizes.feed_concurrency)
    out = ctx.ceiling(directory, "feeds", sizes.feeds, sizes.feed_concurrency)
    if int(ctx.client.get(COUNTER) or 0) != sizes.feeds:
        raise BenchError("the ceiling run did not complete every feed")
    start = float(ctx.client.get(START) or out["start"])
    return {"feeds/s": sizes.feeds / (out["end"] - start)}


def feeds_system(system: System) -> Measure:
    def measure(ctx: Context, directory: Path) -> dict[str, float]:
        sizes = ctx.sizes
        c = system.concurrency(sizes.feed_concurrency)
        url = ctx.prepare(system, directory, c)
        ctx.produce(directory, "feeds", sizes.feeds)
        worker = ctx.worker(system, directory, url, c, "feeds")
        try:
            peak = PeakRss(worker)
            end = wait_count(ctx.client, COUNTER, sizes.feeds, worker, ctx.timeout)
            rss = peak.stop()
            start = float(ctx.client.get(START) or 0)
            return {"feeds/s": sizes.feeds / (end - start),
                    "feeds/s incl. start": sizes.feeds / (end - worker.started),
                    "peak RSS MB": rss}
        finally:
            ctx.stop(worker, system)
    return measure


def _feeds_method(s: Sizes) -> str:
    return (f"{s.feeds:,} feed tasks queued first; each GETs one feed from the loopback feed hub "
            f"({s.feed_latency} s latency) with `requests`, parses it with ElementTree and "
            f"INCRs a counter; c={s.feed_concurrency:,}. Rate from the first task's start to "
            "the last completion; `incl. start` from starting the worker's CLI. The ceiling: "
            f"the same body in a bare `gevent.pool.Pool({s.feed_concurrency})`, no queue. "
            "`--processes 2` is set against the one-process ceiling.")


# -- no-op --------------------------------------------------------------------------------------
def noop_ceiling(ctx: Context, directory: Path) -> dict[str, float]:
    sizes = ctx.sizes
    ctx.prepare(BARE, directory, sizes.noop_concurrency)
    out = ctx.ceiling(directory, "noop", sizes.noop, sizes.noop_concurrency)
    return {"tasks/s": sizes.noop / (out["end"] - out["start"])}


def noop_run(ctx: Context, system: System, directory: Path, count: int, broker: str = "redis",
             extra_args: tuple[str, ...] = ()) -> dict[str, float]:
    """``count`` one-INCR tasks queued, then the worker: tasks/s and its CPU per task."""
    c = system.concurrency(ctx.sizes.noop_concurrency)
    url = ctx.prepare(system, directory, c, broker)
    ctx.fill(directory, count)
    worker = ctx.worker(system, directory, url, c, "noop", extra_args)
    try:
        cpu: list[float] = []
        rate = count_rate(ctx.client, COUNTER, 0, count, worker, ctx.timeout, cpu)
        return {"tasks/s": rate, "worker CPU us/task": cpu[0] * 1e6}
    finally:
        ctx.stop(worker, system)


def noop_system(system: System) -> Measure:
    return lambda ctx, directory: noop_run(ctx, system, directory, ctx.sizes.noop)


def _noop_method(s: Sizes) -> str:
    return (f"{s.noop:,} tasks of one Redis INCR queued first, c={s.noop_concurrency} (prefork "
            "and RQ: a process per core); rate from the first INCR to the last; worker CPU "
            "(supervisor and children) per task over the same stretch. The ceiling: the same "
            f"INCR in a bare `gevent.pool.Pool({s.noop_concurrency})`.")


# -- start-up ----------------------------------------------------------------------------------
def full_speed(trace: list[tuple[float, int]]) -> float:
    """Seconds from the first task to the first 100 ms window that runs at 80% of the
    rate of the trace's second half: when the worker reached full speed."""
    first = next(t for t, v in trace if v > 0)
    total = trace[-1][1]
    half = next(t for t, v in trace if v >= total // 2)
    steady = (total - total // 2) / max(trace[-1][0] - half, 1e-6)
    j = 0
    for t, v in trace:
        while j < len(trace) and trace[j][0] < t + 0.1:  # the window's end, moving forward
            j += 1
        if j == len(trace):
            break
        if (trace[j][1] - v) / (trace[j][0] - t) >= 0.8 * steady:
            return max(0.0, t - first)
    return trace[-1][0] - first


def startup_system(system: System) -> Measure:
    def measure(ctx: Context, directory: Path) -> dict[str, float]:
        count = ctx.sizes.startup
        c = system.concurrency(ctx.sizes.noop_concurrency)
        url = ctx.prepare(system, directory, c)
        ctx.fill(directory, count)
        worker = ctx.worker(system, directory, url, c, "startup")
        try:
            trace: list[tuple[float, int]] = []
            end = wait_count(ctx.client, COUNTER, count, worker, ctx.timeout, trace)
            first = next(t for t, v in trace if v > 0)
            return {"s to first task": first - worker.started,
                    "s first task to full speed": full_speed(trace),
                    "tasks/s": count / (end - first),
                    "tasks/s incl. start": count / (end - worker.started)}
        finally:
            ctx.stop(worker, system)
    return measure


# -- events --------------------------------------------------------------------------------------
def events_entries(systems: list[System]) -> list[Entry]:
    celeriac = SYSTEMS["celeriac-gevent"]
    return [Entry("celeriac-gevent", lambda ctx, d: noop_run(ctx, celeriac, d, ctx.sizes.events)),
            Entry("celeriac-gevent -E", lambda ctx, d: noop_run(ctx, celeriac, d, ctx.sizes.events,
                                                                extra_args=("-E",)))]


# -- brokers -------------------------------------------------------------------------------------
def broker_entries(systems: list[System]) -> list[Entry]:
    entries = []
    for system in systems:
        if not system.producer or not system.applies("brokers"):
            continue
        for broker in ("sqlite", "redis", "amqp"):
            label = f"{system.name} @ {broker}"
            if broker not in system.brokers:
                continue
            if broker == "amqp" and rabbitmq_missing():
                entries.append(Entry(label, None, str(rabbitmq_missing())))
                continue
            entries.append(Entry(label, _broker_measure(system, broker)))
    return entries


def _broker_measure(system: System, broker: str) -> Measure:
    def measure(ctx: Context, directory: Path) -> dict[str, float]:
        count = ctx.sizes.brokers
        c = system.concurrency(ctx.sizes.noop_concurrency)
        url = ctx.prepare(system, directory, c, broker)
        enqueue = ctx.produce(directory, "enqueue", count)["rate"]
        # the queue now holds ``count`` messages: run them
        worker = ctx.worker(system, directory, url, c, "broker")
        try:
            rate = count_rate(ctx.client, COUNTER, 0, count, worker, ctx.timeout)
        finally:
            ctx.stop(worker, system)
        return {"enqueue/s": enqueue, "no-op tasks/s": rate}
    return measure


# -- depth ---------------------------------------------------------------------------------------
def depth_system(system: System) -> Measure:
    def measure(ctx: Context, directory: Path) -> dict[str, float]:
        sizes, out = ctx.sizes, {}
        c = system.concurrency(ctx.sizes.noop_concurrency)
        for depth in (sizes.depth_small, sizes.depth_large):
            url = ctx.prepare(system, directory / str(depth), c)
            ctx.fill(directory / str(depth), depth)
            measured = sizes.depth_measured
            out[f"enqueue/s @{depth:,}"] = ctx.produce(directory / str(depth), "enqueue",
                                                       measured)["rate"]
            worker = ctx.worker(system, directory / str(depth), url, c, "depth")
            try:
                out[f"drain/s @{depth:,}"] = count_rate(ctx.client, COUNTER, 0, measured, worker,
                                                        ctx.timeout)
            finally:
                ctx.stop(worker, system)
        return out
    return measure


def _depth_method(s: Sizes) -> str:
    text = (f"{s.depth_small:,} or {s.depth_large:,} no-op tasks queued first (the bulk API "
            f"where there is one, else the enqueue loop in parallel processes); then "
            f"{s.depth_measured:,} more enqueued with the `.delay()` loop (enqueue/s), then the "
            f"worker started: drain/s over its first {s.depth_measured:,} tasks.")
    if s.depth_large < Sizes().depth_large:
        text += (f" **Smaller than the issue's 10,000 vs 1,000,000** (`--quick` or `--scale`): "
                 f"{s.depth_small:,} vs {s.depth_large:,}.")
    return text


def depth_entries(systems: list[System]) -> list[Entry]:
    return _per_system("depth", [s for s in systems if s.producer], depth_system)


def depth_metrics(sizes: Sizes) -> list[str]:
    return [f"{kind}/s @{depth:,}" for kind in ("enqueue", "drain")
            for depth in (sizes.depth_small, sizes.depth_large)]


# -- enqueue, latency, memory ------------------------------------------------------------------
def enqueue_ceiling(ctx: Context, directory: Path) -> dict[str, float]:
    """What no framework can beat on this machine: a plain redis-py ``LPUSH`` of a
    message-sized value per call (one round trip), and 10,000 values per ``LPUSH``."""
    sizes = ctx.sizes
    ctx.prepare(BARE, directory, sizes.noop_concurrency)
    out = {".delay() loop /s": ctx.produce(directory, "roundtrip", sizes.enqueue)["rate"]}
    ctx.client.flushall()
    out["bulk /s"] = ctx.produce(directory, "roundtrip-bulk", sizes.bulk)["rate"]
    return out


def enqueue_system(system: System) -> Measure:
    def measure(ctx: Context, directory: Path) -> dict[str, float]:
        sizes = ctx.sizes
        ctx.prepare(system, directory, system.concurrency(sizes.noop_concurrency))
        out = {".delay() loop /s": ctx.produce(directory, "enqueue", sizes.enqueue)["rate"]}
        ctx.client.flushall()
        bulk = ctx.produce(directory, "bulk", sizes.bulk)
        if "rate" in bulk:
            out["bulk /s"] = bulk["rate"]
        return out
    return measure


def latency_ceiling(ctx: Context, directory: Path) -> dict[str, float]:
    """The least any Redis queue can take from send to start on this machine: one
    ``LPUSH`` and a consumer woken from ``BLPOP`` (``ceiling.py latency``)."""
    sizes = ctx.sizes
    ctx.prepare(BARE, directory, sizes.noop_concurrency)
    consumer = ctx.bare_consumer(directory)
    try:
        time.sleep(0.5)
        samples = sorted(ctx.produce(directory, "bare-latency", sizes.latency_samples)["samples"])
    finally:
        consumer.stop()
    return _percentiles(samples)


def _percentiles(samples: list[float]) -> dict[str, float]:
    return {"p50 ms": 1000 * statistics.median(samples),
            "p99 ms": 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))]}


def latency_system(system: System) -> Measure:
    def measure(ctx: Context, directory: Path) -> dict[str, float]:
        c = system.concurrency(ctx.sizes.noop_concurrency)
        url = ctx.prepare(system, directory, c)
        worker = ctx.worker(system, directory, url, c, "latency")
        try:
            ctx.fill(directory, 1)  # the worker is up and has run a task
            wait_count(ctx.client, COUNTER, 1, worker, ctx.timeout)
            time.sleep(0.5)
            samples = sorted(ctx.produce(directory, "latency", ctx.sizes.latency_samples)["samples"])
        finally:
            ctx.stop(worker, system)
        return _percentiles(samples)
    return measure


def memory_ceiling(ctx: Context, directory: Path) -> dict[str, float]:
    """The same feeds in a bare gevent pool, measured as a worker is: what the workload
    holds by itself, with a thousand requests and Redis calls in flight and no queue."""
    ctx.prepare(BARE, directory, ctx.sizes.feed_concurrency)
    bare = ctx.bare_memory(directory)
    try:
        return _rss_under_feeds(ctx, bare, lambda: ctx.client.rpush(BARE_GO, "go"))
    finally:
        bare.stop()


def _rss_under_feeds(ctx: Context, worker: Worker, feed: Callable[[], object]
                     ) -> dict[str, float]:
    """Once ``worker`` has run its first task (the counter at 1): its RSS a second later,
    then its peak RSS and descriptors while ``feed()`` gives it the feeds to run."""
    wait_count(ctx.client, COUNTER, 1, worker, ctx.timeout)
    time.sleep(1.0)
    idle = worker.rss_mb()
    peak = PeakRss(worker)
    feed()
    wait_count(ctx.client, COUNTER, 1 + ctx.sizes.memory_feeds, worker, ctx.timeout)
    return {"idle RSS MB": idle, "RSS under feeds MB": peak.stop(),
            "open files under feeds": peak.files}


def memory_system(system: System) -> Measure:
    def measure(ctx: Context, directory: Path) -> dict[str, float]:
        sizes = ctx.sizes
        c = system.concurrency(sizes.feed_concurrency)
        url = ctx.prepare(system, directory, c)
        worker = ctx.worker(system, directory, url, c, "memory")
        try:
            ctx.fill(directory, 1)
            return _rss_under_feeds(
                ctx, worker, lambda: ctx.produce(directory, "feeds", sizes.memory_feeds))
        finally:
            ctx.stop(worker, system)
    return measure


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    Workload("feeds", "Feed hub", ["feeds/s", "feeds/s incl. start", "peak RSS MB"],
             _feeds_method,
             lambda systems: [Entry(CEILING, feeds_ceiling),
                              *_per_system("feeds", systems, feeds_system)],
             frozenset({"peak RSS MB"}), ratio_of="feeds/s"),
    Workload("noop", "No-op overhead", ["tasks/s", "worker CPU us/task"], _noop_method,
             lambda systems: [Entry(CEILING, noop_ceiling),
                              *_per_system("noop", systems, noop_system)],
             frozenset({"worker CPU us/task"}), ratio_of="tasks/s"),
    Workload("startup", "Start-up", ["tasks/s", "s to first task", "s first task to full speed",
                                     "tasks/s incl. start"],
             lambda s: (f"{s.startup:,} no-op tasks queued, then the worker's CLI is started; "
                        "the counter is traced every 10 ms. `tasks/s` from the first task to "
                        "the last (as the no-op workload counts, so the two compare), `incl. "
                        "start` from starting the CLI. Full speed: the first 100 ms window at "
                        "80% of the rate of the run's second half."),
             lambda systems: _per_system("startup", systems, startup_system),
             frozenset({"s to first task", "s first task to full speed"})),
    Workload("enqueue", "Enqueue", [".delay() loop /s", "bulk /s"],
             lambda s: (f"{s.enqueue:,} sequential `.delay()` (`.send()`, a call, "
                        "`queue.enqueue`) in one plain process, after one untimed; bulk: "
                        f"{s.bulk:,} messages through the framework's bulk API "
                        "(celeriac `apply_many`, RQ `enqueue_many`; 10,000 a call), none "
                        "elsewhere. No worker runs. The ceiling: no framework, a plain "
                        "redis-py `LPUSH` of a 740-byte value (the size of celeriac's no-op "
                        "message) per call, each waiting for Redis's answer as a publish "
                        "must; bulk, 10,000 such values per `LPUSH`."),
             lambda systems: [Entry(ROUNDTRIP, enqueue_ceiling),
                              *_per_system("enqueue", [s for s in systems if s.producer],
                                           enqueue_system)],
             ratio_of=".delay() loop /s", ceiling=ROUNDTRIP),
    Workload("latency", "Latency", ["p50 ms", "p99 ms"],
             lambda s: (f"{s.latency_samples} tasks, one at a time 20 ms apart, sent to an idle "
                        "worker that has run one task; enqueue-to-start on the task's clock. "
                        "The ceiling: no framework, the send time `LPUSH`ed with redis-py to "
                        "a plain consumer waiting in `BLPOP`, which pushes back its latency "
                        "as a task body does."),
             lambda systems: [Entry(BARE_POP, latency_ceiling),
                              *_per_system("latency", systems, latency_system)],
             frozenset({"p50 ms", "p99 ms"}), ratio_of="p50 ms", ceiling=BARE_POP),
    Workload("memory", "Memory", ["idle RSS MB", "RSS under feeds MB", "open files under feeds"],
             lambda s: (f"Worker RSS (supervisor and every process, summed) at "
                        f"c={s.feed_concurrency:,}: idle 1 s after its first task, and the peak "
                        f"(sampled every 0.1 s) while it runs {s.memory_feeds:,} feed tasks; "
                        "beside it the most file descriptors its processes held at once in "
                        "that run, sampled with it: mostly the task module's HTTP and Redis "
                        "connections, one of each per task running at once."),
             lambda systems: [Entry(CEILING, memory_ceiling),
                              *_per_system("memory", systems, memory_system)],
             frozenset({"idle RSS MB", "RSS under feeds MB"})),
    Workload("depth", "Depth", [],  # columns depend on the sizes: depth_metrics()
             _depth_method,
             depth_entries),
    Workload("events", "Events on (-E) vs off", ["tasks/s", "worker CPU us/task"],
             lambda s: (f"celeriac-gevent no-op ({s.events:,} tasks, c={s.noop_concurrency}) "
                        "with and without `-E`, side by side in each run."),
             events_entries, frozenset({"worker CPU us/task"})),
    Workload("brokers", "Brokers", ["enqueue/s", "no-op tasks/s"],
             lambda s: (f"{s.brokers:,} `.delay()` enqueues, then those tasks (one Redis "
                        f"INCR each) run at c={s.noop_concurrency}; SQLite, Redis and RabbitMQ "
                        "(a private node) for each framework that supports them."),
             broker_entries),
]}
