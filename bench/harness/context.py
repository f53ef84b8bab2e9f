"""What every measurement shares: servers, sizes, the compare venv, one system's set-up.

A measurement (``workloads.py``) gets a :class:`Context` and a fresh directory, writes
the system's task module there for a broker (:meth:`Context.prepare`), and starts the
system's worker with its own CLI (:meth:`Context.worker`). Redis is flushed before every
measurement, so no queue, counter or stale worker record survives from the previous one.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import PRODUCE, REPO, BenchError, Worker, child_env, log_trouble, produce, tail
from .servers import rabbit_server
from .systems import System, bin_dir, resolve_command
from .tasks import module_source

CEILING = Path(__file__).resolve().parent / "ceiling.py"
#: Producer processes that fill a queue at once for a framework without a bulk API.
FILLERS = 4


@dataclass(frozen=True)
class Sizes:
    """How much each workload does; ``--quick`` shrinks every one of them."""

    feeds: int = 6_000
    feed_concurrency: int = 1_000
    feed_latency: float = 0.5
    noop: int = 40_000
    noop_concurrency: int = 100
    startup: int = 10_000
    enqueue: int = 10_000
    bulk: int = 100_000
    latency_samples: int = 200
    memory_feeds: int = 3_000
    depth_small: int = 10_000
    depth_large: int = 1_000_000
    depth_measured: int = 10_000
    events: int = 40_000
    brokers: int = 10_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(feeds=2_000, noop=2_000, startup=1_000, enqueue=2_000, bulk=10_000,
                   latency_samples=30, memory_feeds=1_000, depth_small=500,
                   depth_large=5_000, depth_measured=500, events=2_000, brokers=1_000)


@dataclass
class Context:
    """The run's servers and settings, handed to every measurement."""

    python: Path
    root: Path
    redis_url: str
    hub_port: int
    sizes: Sizes
    timeout: float
    stack: ExitStack
    #: Error lines of each system's worker logs, counted (reported under the tables).
    trouble: dict[str, dict[str, int]] = field(default_factory=dict)
    _rabbit: Any = None
    _client: Any = None

    @property
    def client(self) -> Any:
        """A Redis client on the run's Redis (counters, and the Redis broker)."""
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.redis_url)
        return self._client

    def rabbit(self) -> Any:
        """The private RabbitMQ node, started on first use (10 s or so)."""
        if self._rabbit is None:
            self._rabbit = self.stack.enter_context(rabbit_server(self.root / "rabbit"))
        return self._rabbit

    def broker_url(self, broker: str, directory: Path) -> str:
        if broker == "redis":
            return self.redis_url
        if broker == "sqlite":
            return f"sqlite:///{directory / 'broker.db'}"
        if broker == "amqp":
            server = self.rabbit()
            return str(server.url(server.vhost()))
        raise BenchError(f"unknown broker {broker}")

    def prepare(self, system: System, directory: Path, concurrency: int,
                broker: str = "redis", extra: str = "") -> str:
        """Flush Redis and write ``system``'s task module into ``directory``; its broker URL."""
        directory.mkdir(parents=True, exist_ok=True)
        self.client.flushall()
        url = self.broker_url(broker, directory)
        settings = ", ".join(s for s in (system.module_settings, extra) if s)
        if system.framework.startswith("celeriac"):
            backend = self.redis_url if broker != "sqlite" else url
            if broker == "amqp":
                settings = ", ".join(s for s in (settings, f"broker_state_url={self.redis_url!r}")
                                     if s)
        else:
            backend, settings = None, "\n".join(s for s in (system.module_settings, extra) if s)
        (directory / "benchtasks.py").write_text(module_source(
            system.framework, url, self.redis_url, self.hub_port, concurrency, settings, backend))
        return url

    def worker(self, system: System, directory: Path, broker_url: str, concurrency: int,
               label: str, extra_args: tuple[str, ...] = ()) -> Worker:
        """Start ``system``'s worker with its own CLI in ``directory``."""
        argv = system.command(bin_dir(self.python), str(self.python), broker_url, concurrency)
        argv = resolve_command([*argv, *extra_args], self.python)
        return Worker(argv, directory, label, str(REPO))

    def stop(self, worker: Worker, system: System) -> None:
        worker.stop()
        log_trouble(worker.log, self.trouble.setdefault(system.name, {}))

    def produce(self, directory: Path, action: str, count: int) -> dict[str, Any]:
        return produce(self.python, directory, action, count, self.timeout, str(REPO))

    def fill(self, directory: Path, count: int) -> None:
        """Queue ``count`` no-op tasks before a measurement, the fastest way there is: the
        framework's bulk call when it has one (``produce.py fill``), else its enqueue loop
        in ``FILLERS`` processes at once (a million through one Celery loop would take ten
        minutes). Not a measurement: nothing here is reported."""
        bulk = "enqueue_bulk = None" not in (directory / "benchtasks.py").read_text()
        parts = 1 if bulk or count < 10_000 else FILLERS
        procs = [subprocess.Popen(
            [str(self.python), str(PRODUCE), str(directory), "fill", str(share)],
            cwd=directory, env=child_env(directory, str(REPO)), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
            for share in (count // parts + (1 if i < count % parts else 0) for i in range(parts))]
        for proc in procs:
            _, stderr = proc.communicate(timeout=self.timeout)
            if proc.returncode != 0:
                raise BenchError(f"filling the queue failed:\n{tail(stderr)}")

    def bare_consumer(self, directory: Path) -> Worker:
        """The latency workload's bare consumer (``ceiling.py DIRECTORY latency``), started."""
        return Worker([str(self.python), str(CEILING), str(directory), "latency", "0", "1"],
                      directory, "bare-consumer", str(REPO))

    def bare_memory(self, directory: Path) -> Worker:
        """The memory workload's bare run (``ceiling.py DIRECTORY memory``), started: it
        runs one no-op and waits for :data:`ceiling.GO` before its feeds."""
        sizes = self.sizes
        return Worker([str(self.python), str(CEILING), str(directory), "memory",
                       str(sizes.memory_feeds), str(sizes.feed_concurrency)],
                      directory, "bare-memory", str(REPO))

    def ceiling(self, directory: Path, kind: str, count: int, concurrency: int) -> dict[str, float]:
        """The bare-pool run (``ceiling.py``) on ``directory``'s module: its start and end."""
        done = subprocess.run(
            [str(self.python), str(CEILING), str(directory), kind, str(count), str(concurrency)],
            cwd=directory, env=child_env(directory, str(REPO)), capture_output=True, text=True,
            timeout=self.timeout)
        if done.returncode != 0:
            raise BenchError(f"the ceiling run failed:\n{tail(done.stderr)}")
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
