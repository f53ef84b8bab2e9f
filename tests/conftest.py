"""Shared fixtures: a temporary project directory and real CLI workers in subprocesses.

End-to-end tests run ``celeriac -A tasks worker ...`` exactly as a user would,
in a temporary directory holding a ``tasks.py`` and a SQLite database, and talk
to it through the same app from the test process.

Redis tests use a real redis-server (``tests/redisserver.py``): ``redis_server``
is one per run, ``redis_url`` gives each test its own key prefix on it, and
``fresh_redis`` is a private, AOF-backed server for tests that kill or restart it.

RabbitMQ tests use real private nodes (``tests/rabbitserver.py``): ``rabbit_server``
is one per run, ``amqp_url`` gives each test a vhost of its own on it, and
``fault_rabbit`` is a second node, shared by the tests that kill or restart it.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rabbitserver import RabbitServer, RabbitServerError, require_rabbitmq
from redisserver import RedisServer, RedisServerError, require_redis_server

#: Task module used by most end-to-end tests; tests may append their own tasks.
TASKS = '''
import os, time
from celeriac import Celeriac

app = Celeriac("tasks")

@app.task
def add(x, y):
    return x + y

@app.task
def noop():
    return None

@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds

@app.task
def fail(message):
    raise ValueError(message)

@app.task
def pid():
    return os.getpid()

@app.task
def wait_for(path, timeout=60):
    """Run until the test creates ``path``: a task that is running for as long as needed."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)
    return path

@app.task(bind=True)
def record(self, path, seconds=0.0):
    """Append this delivery to a file, then sleep: lets tests count executions."""
    with open(path, "a") as f:
        f.write(f"{self.request.id} {os.getpid()}\\n")
    time.sleep(seconds)
    return self.request.id

@app.task(bind=True)
def record_until(self, path, gate, timeout=60):
    """Append this delivery to a file like ``record``, then run until the test creates
    ``gate``: surely still running whenever the test needs it (however loaded the machine),
    and done as soon as it is let go, where a sleep would hold a rerun as long again."""
    with open(path, "a") as f:
        f.write(f"{self.request.id} {os.getpid()}\\n")
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(gate)
        time.sleep(0.02)
    return self.request.id
'''


def take(app: Any, queue: str = "celery") -> list[Any]:
    """Every message in ``queue`` of ``app``'s broker, acked and decoded, oldest first:
    what a producer-side test sent, without a worker."""
    from celeriac.message import decode

    deliveries = app.broker.fetch([queue], 100_000, consumer="test", lease=30)
    app.broker.ack(deliveries)
    return [decode(d.body) for d in deliveries]


def compare_python() -> Path | None:
    """The Python of a venv with real Celery and kombu, for the interop tests:
    ``CELERIAC_COMPARE_VENV`` (``./scripts/test`` makes ``.venv-celery``), else
    ``bench/.venv-compare``; None when neither exists."""
    default = Path(__file__).resolve().parents[1] / "bench" / ".venv-compare"
    python = Path(os.environ.get("CELERIAC_COMPARE_VENV", default)) / "bin" / "python"
    return python if python.exists() else None


#: An interop test needs real Celery: it skips without it locally, and fails under
#: ``CI=true`` (``./scripts/test`` installs it there), as a missing redis-server does.
needs_celery = pytest.mark.skipif(
    compare_python() is None and os.environ.get("CI") != "true",
    reason="no venv with Celery (CELERIAC_COMPARE_VENV or bench/.venv-compare)")


def gevent_patched() -> bool:
    """True in the gevent-patched leg (``tests/gevent_leg.py``): threads here are greenlets."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


#: End-to-end modules about what happens inside worker processes (pools, faults, hooks,
#: flags, events). The gevent-patched leg is about the client side, which these exercise
#: only as every other end-to-end test does (send, wait for a result): they run in the
#: normal leg only, so that ./scripts/test stays within its 20 minutes.
WORKER_SIDE_MODULES = frozenset({
    "test_faults.py", "test_green.py", "test_mixed.py", "test_pools.py", "test_signals.py",
    "test_supervisor_hooks.py", "test_task_events.py", "test_task_options.py",
    "test_celery_flags.py", "test_task_logging.py", "test_django.py",
    "test_autoscale.py", "test_beat.py", "test_limits.py", "test_canvas.py", "test_chords.py",
    "test_replace.py", "test_send_options.py", "test_predicates.py", "test_detach.py",
    "test_celery_compat.py", "test_attribution.py", "test_vanished_node.py",
    "test_supervisor_followups.py", "test_amqp_faults.py", "test_amqp_worker.py",
    "test_amqp_celery.py", "test_aio_tasks.py", "test_dashboard_cli.py", "test_metrics.py",
    "test_queue_admin.py",
})


#: Marks a test (or one parameter, or a module) the gevent-patched leg need not run: what it
#: checks happens in worker or CLI processes, and the patched test process only sends and
#: waits as other tests there already do (or runs subprocesses only); the normal leg runs it.
normal_leg_only = pytest.mark.skipif(
    gevent_patched(), reason="nothing gevent-specific in the test process: the normal leg runs it")


#: ``CELERIAC_TEST_CLAIMS=DIR``: pytest processes given the same empty directory share out
#: the collected modules as they go: each runs a module only once it has claimed it (a
#: file of that module's name made in DIR with O_EXCL), heaviest first, so the processes
#: end at about the same time whatever the modules cost. A module is never split (its
#: fixtures stay together). ./scripts/test runs the gevent-patched leg as two such
#: processes at once, since a patched process cannot use pytest-xdist (its workers start
#: unpatched). Each process reports only the tests it ran; its progress percentages count
#: every collected test, so they end short of 100%.
CLAIMS_VARIABLE = "CELERIAC_TEST_CLAIMS"
#: Taken out of the environment, so that a pytest a test starts does not claim modules.
CLAIMS = os.environ.pop(CLAIMS_VARIABLE, "")


def _item_weight(item: pytest.Item) -> int:
    """A rough cost, to take the heavy modules first: an end-to-end test starts processes
    and waits on them; a RabbitMQ-backed one waits on the node. Skipped items cost
    nothing."""
    for mark in item.iter_markers():
        if mark.name == "skip" or (mark.name == "skipif" and mark.args and mark.args[0] is True):
            return 0
    weight = 8 if item.path.parent.name == "e2e" else 1
    return weight + (2 if "amqp" in item.nodeid else 0)


def modules_by_weight(items: Sequence[pytest.Item]) -> list[list[pytest.Item]]:
    """``items`` grouped by module, in collection order within each, heaviest module
    first (ties by name)."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    weights = {name: sum(_item_weight(item) for item in found) for name, found in modules.items()}
    return [modules[name] for name in sorted(modules, key=lambda name: (-weights[name], name))]


def claim(directory: Path, module: str) -> bool:
    """True for the one process that claims ``module`` first in ``directory``."""
    path = directory / module.replace("/", "__")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """With :data:`CLAIMS_VARIABLE` set, run the modules this process claims (pytest's own
    loop otherwise). The last test of a module is told the first test of the next module
    claimed, as pytest's loop would, so session fixtures (the Redis and RabbitMQ nodes)
    live on between modules."""
    directory = CLAIMS
    if not directory or session.config.option.collectonly:
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
    pending = iter(modules_by_weight(session.items))

    def next_claimed() -> list[pytest.Item] | None:
        for module in pending:
            if claim(Path(directory), module[0].nodeid.split("::")[0]):
                return module
        return None

    current = next_claimed()
    while current is not None:
        following = None
        for index, item in enumerate(current):
            if index + 1 < len(current):
                nextitem: pytest.Item | None = current[index + 1]
            else:
                following = next_claimed()
                nextitem = following[0] if following else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        current = following
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gevent_patched():
        _mark_gevent_leg(items)


def _mark_gevent_leg(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="worker-side end-to-end test: the normal leg runs it")
    browser = pytest.mark.skip(reason="browser test: its own unpatched process runs it "
                                      "(Playwright's sync API runs an event loop in a greenlet)")
    for item in items:
        path = item.path
        if path.parent.name == "e2e" and path.name in WORKER_SIDE_MODULES:
            item.add_marker(skip)
        elif path.parent.name == "browser":
            item.add_marker(browser)


def pytest_report_header(config: pytest.Config) -> str:
    if gevent_patched():
        return "gevent-patched leg: this process ran gevent.monkey.patch_all() before pytest"
    return "not monkey-patched (tests/gevent_leg.py runs the suite again patched)"


@dataclass
class Worker:
    """A ``celeriac worker`` subprocess."""

    proc: subprocess.Popen[str]
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in worker log after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(10)
        return self.proc.returncode

    def children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the worker to exit on its own; its exit code."""
        return self.proc.wait(timeout)


@dataclass
class Project:
    """A temporary project: ``tasks.py`` plus a SQLite database, and workers started in it."""

    path: Path
    broker_url: str
    workers: list[Worker] = field(default_factory=list)
    #: The result backend's URL when it is not the broker's (a RabbitMQ project's).
    backend_url: str = ""

    @property
    def result_url(self) -> str:
        return self.backend_url or self.broker_url

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CELERIAC_BROKER_URL"] = self.broker_url
        env["CELERIAC_RESULT_BACKEND"] = self.result_url
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONPATH", None)
        return env

    def write_tasks(self, extra: str = "", name: str = "tasks") -> None:
        (self.path / f"{name}.py").write_text(TASKS + textwrap.dedent(extra))

    def app(self, name: str = "tasks") -> Any:
        """Import the project's app in the test process (fresh each call)."""
        os.environ["CELERIAC_BROKER_URL"] = self.broker_url
        os.environ["CELERIAC_RESULT_BACKEND"] = self.result_url
        if str(self.path) not in sys.path:
            sys.path.insert(0, str(self.path))
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        return module.app

    def cli(self, *args: str, timeout: float = 60.0, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "celeriac", *args], cwd=self.path,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"celeriac {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def status(self, app: str = "tasks") -> dict[str, Any]:
        """``celeriac status --json``, parsed."""
        data: dict[str, Any] = json.loads(self.cli("-A", app, "status", "--json").stdout)
        return data

    def queue(self, name: str = "celery", app: str = "tasks") -> dict[str, int]:
        """One queue's counts (ready, scheduled, in_flight, dead) from ``celeriac status --json``."""
        counts: dict[str, int] = self.status(app)["queues"].get(name, {})
        return {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0, **counts}

    def start_worker(self, *args: str, app: str = "tasks", ready: bool = True) -> Worker:
        log_path = self.path / f"worker-{len(self.workers)}.log"
        argv = [sys.executable, "-m", "celeriac", "-A", app, "worker", "-l", "INFO", *args]
        proc = subprocess.Popen(argv, cwd=self.path, env=self.env, text=True,
                                stdout=log_path.open("w"), stderr=subprocess.STDOUT)
        worker = Worker(proc, log_path, argv)
        self.workers.append(worker)
        if ready:
            self.wait_ready(worker)
        return worker

    def wait_ready(self, worker: Worker, timeout: float = 30.0) -> None:
        """Wait until every worker process has reported ready (the supervisor logs it)."""
        worker.wait_for_log("all worker processes ready", timeout)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    project = Project(tmp_path, f"sqlite:///{tmp_path / 'celeriac.db'}")
    project.write_tasks()
    monkeypatch.setenv("CELERIAC_BROKER_URL", project.broker_url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", project.broker_url)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield project
    for worker in project.workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGQUIT)
            try:
                worker.proc.wait(15)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
    sys.modules.pop("tasks", None)


def executions(path: Path) -> dict[str, list[int]]:
    """What the ``record`` task appended to ``path``: task id -> pid of each execution."""
    runs: dict[str, list[int]] = {}
    if path.exists():
        for line in path.read_text().split("\n")[:-1]:  # not a line still being written
            task_id, pid = line.split()
            runs.setdefault(task_id, []).append(int(pid))
    return runs


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not met after {timeout}s")


@contextmanager
def collector_off() -> Iterator[None]:
    """The cycle collector off inside, as it was after: an object freed in there was freed
    by reference counting alone, not left in a reference cycle for the collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- Redis ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run (no persistence), stopped at the end.

    Requested lazily, so a run without Redis tests starts no server. Skips when
    redis-server is missing, except with ``CI=true``, where that fails.
    """
    server = RedisServer(tmp_path_factory.mktemp("redis"), binary=require_redis_server())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL on the shared server with a key prefix of this test's own, so tests never meet."""
    if not redis_server.running:  # say so once, plainly, rather than as each test's connection error
        raise RedisServerError("the session's redis-server is not running (a test that kills or "
                               f"restarts a server should use fresh_redis):\n{redis_server.log_tail()}")
    return redis_server.url(prefix=f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with an fsynced AOF, for tests that kill or restart it."""
    server = RedisServer(tmp_path / "redis", appendonly=True, binary=require_redis_server())
    server.start()
    yield server
    server.stop()


# -- RabbitMQ ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    """One private RabbitMQ node for the whole run (8-12 s to start), stopped at the end.

    Requested lazily, so a run without RabbitMQ tests starts no node. Skips when
    RabbitMQ is missing, except with ``CI=true``, where that fails.
    """
    server = RabbitServer(tmp_path_factory.mktemp("rabbit"), binary_dir=require_rabbitmq())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def amqp_url(rabbit_server: RabbitServer) -> str:
    """A URL on the shared node with a vhost of this test's own, so tests never meet."""
    if not rabbit_server.running:
        raise RabbitServerError("the session's RabbitMQ node is not running (a test that kills or "
                                f"restarts a node should use fault_rabbit):\n{rabbit_server.log_tail()}")
    return rabbit_server.url(rabbit_server.vhost())


@pytest.fixture(scope="session")
def _fault_rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    server = RabbitServer(tmp_path_factory.mktemp("rabbit-fault"), binary_dir=require_rabbitmq())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fault_rabbit(_fault_rabbit_node: RabbitServer) -> RabbitServer:
    """A second private node for tests that kill, restart or cut its connections.

    Shared by those tests (a node costs 8-12 s to start): each test takes a vhost of
    its own (``fault_rabbit.url(fault_rabbit.vhost())``) and finds the node running;
    one a previous test left down is started again here.
    """
    if not _fault_rabbit_node.running:
        _fault_rabbit_node.start()
    return _fault_rabbit_node


def stop_project(project: Project) -> None:
    """What the ``project`` fixture does after its test: no worker outlives it, no stale module."""
    for worker in project.workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGQUIT)
            try:
                worker.proc.wait(15)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
    module = sys.modules.pop("tasks", None)
    if module is not None and hasattr(module, "app"):
        module.app.close()  # a result listener of its own would outlive the test


#: Every broker an end-to-end suite that does not depend on one runs on, and the fixture
#: giving a project on it.
PROJECT_FIXTURES = {"sqlite": "project", "redis": "redis_project", "amqp": "amqp_project"}
BROKER_KINDS = list(PROJECT_FIXTURES)


def project_on(request: pytest.FixtureRequest, kind: str) -> Project:
    """The project fixture for broker ``kind`` ("sqlite", "redis" or "amqp")."""
    found: Project = request.getfixturevalue(PROJECT_FIXTURES[kind])
    return found


@pytest.fixture
def amqp_project(tmp_path: Path, amqp_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Project]:
    """Like ``project``, with the broker on RabbitMQ (a vhost of this test's own) and the
    result backend on Redis, which is also the broker's state store (its default)."""
    project = Project(tmp_path, amqp_url, backend_url=redis_url)
    project.write_tasks()
    monkeypatch.setenv("CELERIAC_BROKER_URL", project.broker_url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", project.result_url)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield project
    stop_project(project)


@pytest.fixture
def redis_project(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[Project]:
    """Like ``project``, with broker and result backend on Redis (this test's own key prefix)."""
    project = Project(tmp_path, redis_url)
    project.write_tasks()
    monkeypatch.setenv("CELERIAC_BROKER_URL", project.broker_url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", project.broker_url)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield project
    stop_project(project)
