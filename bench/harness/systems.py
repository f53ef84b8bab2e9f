"""The systems a benchmark compares: a framework, a pool, a worker command line, settings.

Each system is configured as its own documentation recommends for these workloads, and
everything that differs from its defaults is written into the report (``settings``):

* **celeriac** (this checkout): ``celeriac -A benchtasks worker -P POOL -c C`` with
  ``--processes 1`` (``--processes 2`` for ``celeriac-gevent-p2``); prefork at ``-c`` =
  the cores; the asyncio pool runs the tasks as ``async def`` (redis.asyncio, aiohttp);
* **Celery 5.7**: ``celery -A benchtasks worker -P gevent -c C --without-mingle
  --without-gossip`` (the two start-up exchanges only matter between several workers),
  prefork at ``-c`` = the cores; ``pyamqp://`` on RabbitMQ;
* **Dramatiq 2**: ``dramatiq-gevent benchtasks --processes 1 --threads C`` (its gevent
  launcher) and ``dramatiq benchtasks --processes 1 --threads C``;
* **Huey 3**: ``huey_consumer benchtasks.huey -k greenlet -w C`` in a process that ran
  ``gevent.monkey.patch_all()`` first, as Huey's documentation asks for greenlet workers;
* **RQ 2**: ``rq worker-pool -n CORES -w rq.worker.SimpleWorker``: RQ runs one job per
  worker process, so only workloads that do not need hundreds of tasks at once apply to
  it, and those are all jobs of a few milliseconds, for which RQ's performance notes advise
  ``SimpleWorker`` over forking a work horse per job (measured here: ~3 jobs/s forking on
  a loaded 2-core machine).

A system that a workload does not apply to is listed in that workload's table with why
(``not_applicable``), never silently left out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CORES = os.cpu_count() or 1

#: Runs Huey's consumer after gevent's monkey patching, as Huey's documentation asks
#: for the greenlet worker type (``huey_consumer`` itself does not patch).
HUEY_GEVENT_MAIN = (
    "from gevent import monkey; monkey.patch_all()\n"
    "import sys\n"
    "from huey.bin.huey_consumer import consumer_main\n"
    "sys.argv[0] = 'huey_consumer'\n"
    "consumer_main()\n"
)

#: Why a pool that runs one task per process is left out of the workloads that need
#: hundreds of tasks waiting at once.
PER_PROCESS = "one task per process: c=1000 would be 1000 processes"


@dataclass(frozen=True)
class System:
    """One framework with one pool, as the tables name it."""

    name: str
    #: The task module template (``tasks.TEMPLATES``).
    framework: str
    #: Worker command for a concurrency: ``(bin_dir, python, broker_url, c) -> argv``.
    command: Callable[[Path, str, str, int], list[str]]
    #: What is set beyond the framework's defaults, for the report.
    settings: str
    #: Python lines (Celery, Dramatiq, Huey, RQ) or keyword arguments (celeriac) added
    #: to the generated module: the documented settings themselves.
    module_settings: str = ""
    #: True when ``-c`` is a number of processes (prefork, RQ): the cores, whatever the
    #: workload's concurrency.
    processes: bool = False
    #: Workloads this system does not apply to, with why.
    not_applicable: dict[str, str] = field(default_factory=dict)
    #: Brokers (``redis``, ``amqp``, ``sqlite``) its framework supports.
    brokers: tuple[str, ...] = ("redis",)
    #: The system that stands for its framework where the pool does not matter (enqueue).
    producer: bool = False

    def concurrency(self, wanted: int) -> int:
        return CORES if self.processes else wanted

    def applies(self, workload: str) -> bool:
        return workload not in self.not_applicable


def _celeriac(pool: str, processes: int | None = 1) -> Callable[[Path, str, str, int], list[str]]:
    def command(bin_dir: Path, python: str, broker: str, concurrency: int) -> list[str]:
        argv = [str(bin_dir / "celeriac"), "-A", "benchtasks", "worker", "-P", pool, "-c",
                str(concurrency), "-l", "warning"]
        return argv + (["--processes", str(processes)] if processes else [])
    return command


def _celery(pool: str) -> Callable[[Path, str, str, int], list[str]]:
    def command(bin_dir: Path, python: str, broker: str, concurrency: int) -> list[str]:
        return [str(bin_dir / "celery"), "-A", "benchtasks", "worker", "-P", pool, "-c",
                str(concurrency), "-l", "WARNING", "--without-mingle", "--without-gossip"]
    return command


def _dramatiq(launcher: str) -> Callable[[Path, str, str, int], list[str]]:
    def command(bin_dir: Path, python: str, broker: str, concurrency: int) -> list[str]:
        return [str(bin_dir / launcher), "benchtasks", "--processes", "1", "--threads",
                str(concurrency)]
    return command


def _huey(bin_dir: Path, python: str, broker: str, concurrency: int) -> list[str]:
    return [python, "-c", HUEY_GEVENT_MAIN, "benchtasks.huey", "-k", "greenlet", "-w",
            str(concurrency), "-q"]


def _rq(bin_dir: Path, python: str, broker: str, concurrency: int) -> list[str]:
    return [str(bin_dir / "rq"), "worker-pool", "bench", "-n", str(concurrency), "-u", broker,
            "-l", "WARNING", "-w", "rq.worker.SimpleWorker"]


_CELERIAC_SET = "results off (task_ignore_result), -l warning"
_CELERY_SET = ("results off (task_ignore_result), --without-mingle --without-gossip, "
               "prefetch multiplier 4 (default), ack on receipt (default); on RabbitMQ "
               "`pyamqp://` with broker_heartbeat = 0 (the known workaround for gevent "
               "workers: with the default heartbeat Celery 5.7 stalls at ~10 tasks/s here)")

SYSTEMS: dict[str, System] = {s.name: s for s in [
    System("celeriac-gevent", "celeriac", _celeriac("gevent"),
           f"-P gevent -c C --processes 1; {_CELERIAC_SET}",
           brokers=("redis", "amqp", "sqlite"), producer=True),
    System("celeriac-gevent-p2", "celeriac", _celeriac("gevent", 2),
           f"-P gevent -c C --processes 2 (C green threads in each); {_CELERIAC_SET}",
           not_applicable={w: "feed hub only (the issue's --processes 2 line)" for w in
                           ("noop", "startup", "latency", "memory", "depth", "events",
                            "enqueue", "brokers")}),
    System("celeriac-threads", "celeriac", _celeriac("threads"),
           f"-P threads -c C --processes 1; {_CELERIAC_SET}"),
    System("celeriac-prefork", "celeriac", _celeriac("prefork", None),
           f"-P prefork -c {CORES} (the cores); {_CELERIAC_SET}", processes=True,
           not_applicable={"feeds": PER_PROCESS, "memory": PER_PROCESS}),
    System("celeriac-asyncio", "celeriac-async", _celeriac("asyncio"),
           f"-P asyncio -c C --processes 1, async def tasks (redis.asyncio, aiohttp with "
           f"limit=C); {_CELERIAC_SET}"),
    System("celery-gevent", "celery", _celery("gevent"), f"-P gevent -c C; {_CELERY_SET}",
           brokers=("redis", "amqp"), producer=True),
    System("celery-prefork", "celery", _celery("prefork"),
           f"-P prefork -c {CORES} (the cores); {_CELERY_SET}", processes=True,
           not_applicable={"feeds": PER_PROCESS, "memory": PER_PROCESS}),
    System("dramatiq-gevent", "dramatiq", _dramatiq("dramatiq-gevent"),
           "dramatiq-gevent --processes 1 --threads C; no Results middleware (results off); "
           "Redis: the broker's client on a BlockingConnectionPool of C + 16 connections",
           brokers=("redis", "amqp"), producer=True),
    System("dramatiq-threads", "dramatiq", _dramatiq("dramatiq"),
           "dramatiq --processes 1 --threads C; no Results middleware (results off); "
           "Redis: the broker's client on a BlockingConnectionPool of C + 16 connections"),
    System("huey-greenlet", "huey", _huey,
           "huey_consumer -k greenlet -w C after gevent.monkey.patch_all(); results=False; "
           "Redis: a BlockingConnectionPool of C + 16 connections (Huey's advice for greenlet "
           "workers)",
           brokers=("redis", "sqlite"), producer=True),
    System("rq", "rq", _rq,
           f"rq worker-pool -n {CORES} (the cores) -w rq.worker.SimpleWorker (jobs run in the "
           "worker, no fork: RQ's performance notes advise it for jobs of a few milliseconds, "
           "which every RQ workload here is); result_ttl=0", processes=True, producer=True,
           not_applicable={"feeds": PER_PROCESS, "memory": PER_PROCESS,
                           "depth": "a fork per job: draining 1,000,000 takes hours",
                           "events": "celeriac's -E only"}),
]}

#: Systems of a full run, in table order.
DEFAULT = list(SYSTEMS)
#: Systems of ``--quick``.
QUICK = ["celeriac-gevent", "celeriac-gevent-p2", "celery-gevent", "dramatiq-gevent"]


def bin_dir(python: Path) -> Path:
    """The directory of the console scripts beside ``python`` (a venv's ``bin``)."""
    return python.parent


def resolve_command(argv: list[str], python: Path) -> list[str]:
    """``argv`` with a missing console script replaced by ``python -m NAME``."""
    if argv and os.sep in argv[0] and not Path(argv[0]).exists():
        return [str(python), "-m", Path(argv[0]).name.replace("-", "_"), *argv[1:]]
    return argv


def parse(names: str | None, quick: bool) -> list[System]:
    """``--systems a,b``: the systems in table order; the default set otherwise."""
    if not names:
        return [SYSTEMS[n] for n in (QUICK if quick else DEFAULT)]
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown systems {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    return [SYSTEMS[n] for n in DEFAULT if n in chosen]
