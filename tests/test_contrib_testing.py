"""Testing users' own tasks: ``start_worker`` (an embedded worker in this process) and
the pytest plugin's fixtures, on the real memory, SQLite and Redis transports.

The plugin is registered by celeriac's entry point, so this very test run has its
fixtures (``celery_app``, ``celery_worker``...); the tests that need a pytest of their
own (conftest overrides, session fixtures, turning the plugin off) run one in a
subprocess, as a user's project would.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from celeriac import Celeriac
from celeriac.contrib.testing.app import TestApp
from celeriac.contrib.testing.tasks import PING_TASK
from celeriac.contrib.testing.worker import TestWorkController, start_worker
from celeriac.exceptions import ConfigurationError


def memory_app() -> Celeriac:
    return Celeriac("contrib", broker="memory://", backend="memory://")


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_start_worker_runs_tasks_on_the_apps_memory_broker(pool: str) -> None:
    app = memory_app()

    @app.task(bind=True)
    def where(self: Any, x: int) -> list[Any]:
        return [x * 2, threading.current_thread().name, self.request.hostname]

    with start_worker(app, pool=pool, concurrency=2) as worker:
        assert isinstance(worker, TestWorkController)
        doubled, thread, _ = where.delay(21).get(timeout=10)
        assert doubled == 42
        # The task ran on the embedded worker's threads, not the test's.
        assert thread != threading.current_thread().name
        assert PING_TASK in app.tasks  # the ping check registered and ran it
    assert sum(s.ready + s.in_flight for s in app.broker.stats().values()) == 0


def test_start_worker_on_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'celeriac.db'}"
    app = Celeriac("contrib", broker=url, backend=url)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, pool="threads", concurrency=4):
        results = [add.delay(i, i) for i in range(20)]
        assert [r.get(timeout=10) for r in results] == [2 * i for i in range(20)]
    app.close()


def test_start_worker_on_redis(redis_url: str) -> None:
    app = Celeriac("contrib", broker=redis_url, backend=redis_url)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    try:
        with start_worker(app, pool="threads", concurrency=2):
            assert add.delay(2, 3).get(timeout=10) == 5
    finally:
        app.close()


def test_worker_serves_given_queues_and_pings_on_the_first() -> None:
    app = memory_app()

    @app.task(queue="io")
    def fetch() -> str:
        return "fetched"

    with start_worker(app, queues="io, default"):
        assert fetch.delay().get(timeout=10) == "fetched"


def test_by_default_tasks_that_ask_for_a_pool_run_too() -> None:
    app = memory_app()

    @app.task(pool="prefork")
    def crunch() -> int:
        return 7

    with start_worker(app) as worker:
        assert "celery.prefork" in worker.queues
        assert crunch.delay().get(timeout=10) == 7


def test_a_task_registered_after_the_start_runs_without_a_reload() -> None:
    app = memory_app()
    with start_worker(app) as worker:
        @app.task
        def late() -> str:
            return "late"

        worker.reload()
        assert late.delay().get(timeout=10) == "late"


def test_reload_imports_the_named_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "extra_receivers.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "extra_receivers", raising=False)
    with start_worker(memory_app()) as worker:
        worker.reload(["extra_receivers"])
        assert sys.modules["extra_receivers"].LOADED is True
        (tmp_path / "extra_receivers.py").write_text("LOADED = 'again'\n")
        worker.reload(["extra_receivers"], reload=True)
        assert sys.modules["extra_receivers"].LOADED == "again"


def test_unknown_option_and_out_of_process_pool_are_clear_errors() -> None:
    app = memory_app()
    with pytest.raises(ConfigurationError, match="did you mean 'queues'"), \
            start_worker(app, quues=["x"]):
        pass
    with pytest.raises(ConfigurationError, match="cannot run inside the test process"), \
            start_worker(app, pool="prefork"):
        pass
    # Celery's options for parts celeriac has no embedded equivalent of are accepted.
    with start_worker(app, without_heartbeat=True, without_mingle=True, without_gossip=True):
        pass


def test_warm_stop_hands_back_unstarted_messages_uncharged() -> None:
    app = memory_app()
    release = threading.Event()

    @app.task
    def hold() -> str:
        release.wait(30)
        return "held"

    @app.task
    def later() -> None: ...

    with start_worker(app, pool="solo", prefetch_multiplier=4) as worker:
        held = hold.delay()
        wait_until(lambda: worker.pool.running() == 1, message="hold started")
        waiting = [later.delay() for _ in range(3)]
        wait_until(lambda: len(worker.consumer.held) == 4, message="all four prefetched")
        # Let the running task finish only once the stop has begun.
        threading.Thread(target=lambda: (wait_until(lambda: worker.consumer.stopping),
                                         release.set())).start()
    assert held.get(timeout=1) == "held"
    assert all(r.status == "PENDING" for r in waiting)
    deliveries = app.broker.fetch(["celery"], 10, consumer="after", lease=5)
    assert len(deliveries) == 3 and {d.delivery_count for d in deliveries} == {1}


def test_a_worker_that_cannot_stop_in_time_is_an_error() -> None:
    app = memory_app()
    release = threading.Event()

    @app.task
    def hold() -> None:
        release.wait(30)

    manager = start_worker(app, shutdown_timeout=0.2)
    worker = manager.__enter__()
    hold.delay()
    wait_until(lambda: worker.pool.running() == 1, message="hold started")
    with pytest.raises(RuntimeError, match="did not stop within shutdown_timeout"):
        manager.__exit__(None, None, None)
    release.set()
    worker.stop()  # now it can: the thread ends and the pipe is closed
    assert app.broker.stats()["celery"].in_flight == 0


def test_hard_time_limits_are_not_enforced_and_it_says_so_once(
        caplog: pytest.LogCaptureFixture) -> None:
    app = memory_app()

    @app.task(time_limit=30)
    def limited() -> str:
        return "ran"

    caplog.set_level(logging.WARNING, "celeriac")
    with start_worker(app, loglevel=None, pool="threads", concurrency=2):
        assert [limited.delay().get(timeout=10) for _ in range(3)] == ["ran"] * 3
    warnings = [r for r in caplog.records if "do not enforce hard time limits" in r.getMessage()]
    assert len(warnings) == 1 and "30" in warnings[0].getMessage()


def test_logfile_gets_the_workers_log(tmp_path: Path) -> None:
    app = memory_app()

    @app.task
    def noop() -> None: ...

    logfile = tmp_path / "worker.log"
    with start_worker(app, loglevel="INFO", logfile=str(logfile)):
        noop.delay().get(timeout=10)
    text = logfile.read_text()
    assert "celery.ping" in text and f"{noop.name}[" in text and "succeeded" in text
    assert logging.getLogger("celeriac").handlers == []


def test_a_broker_that_fails_stops_the_worker_loudly() -> None:
    # A Redis port where nothing listens: the consumer's first fetch fails for real.
    import socket

    pytest.importorskip("redis")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = Celeriac("contrib", broker=f"redis://127.0.0.1:{port}/0", backend="memory://",
                   broker_reconnect_timeout=0.3)
    with pytest.raises(RuntimeError, match="embedded worker failed") as info, \
            start_worker(app, perform_ping_check=False) as worker:
        wait_until(lambda: worker._stopped.is_set(), message="the worker gave up")
    assert "127.0.0.1" in str(info.value.__cause__)


def test_test_app_is_in_memory_whatever_the_environment_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_BROKER_URL", "redis://nowhere:1/0")
    app = TestApp(config={"task_default_queue": "tests"})
    assert (app.conf.broker_url, app.conf.result_backend) == ("memory://", "memory://")
    assert app.conf.task_default_queue == "tests" and PING_TASK in app.tasks
    with pytest.raises(ConfigurationError, match="did you mean 'task_default_queue'"):
        TestApp(config={"task_default_queu": "x"})


# -- the plugin's fixtures, in this run ---------------------------------------------------
def test_plugin_is_registered_by_the_entry_point(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.has_plugin("celeriac.contrib.pytest")


def test_celery_app_and_celery_worker(celery_app: Celeriac, celery_worker: TestWorkController
                                      ) -> None:
    @celery_app.task
    def mul(x: int, y: int) -> int:
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16
    assert celery_app.conf.broker_url == "memory://"


@pytest.mark.celery(task_default_queue="marked")
def test_celery_marker_overrides_settings(celery_app: Celeriac) -> None:
    assert celery_app.conf.task_default_queue == "marked"


# -- the plugin as a user's project sees it (its own pytest) ------------------------------
USER_TESTS = '''
import pytest
from celeriac.contrib.testing.worker import TestWorkController


def test_function_worker(celery_app, celery_worker):
    @celery_app.task
    def add(x, y):
        return x + y

    assert add.delay(2, 2).get(timeout=10) == 4
    assert celery_worker.pool.name == "threads"
    assert celery_app.conf.task_default_priority == 3
    assert celery_app.conf.accept_content == ["json"]


@pytest.mark.celery(task_default_priority=7)
def test_marker(celery_app):
    assert celery_app.conf.task_default_priority == 7


def test_session_worker_first(celery_session_app, celery_session_worker):
    import user_tasks

    assert user_tasks.included.delay().get(timeout=10) == "included"
    assert celery_session_worker.queues == ["celery", "extra"]


def test_session_worker_again(celery_session_app, celery_session_worker):
    import user_tasks

    assert user_tasks.included.delay().get(timeout=10) == "included"


@pytest.mark.usefixtures("depends_on_current_app")
def test_depends_on_current_app(use_celery_app_trap):
    assert use_celery_app_trap is False
'''

USER_CONFTEST = '''
import pytest

{plugins}

@pytest.fixture(scope="session")
def celery_config():
    return {{"task_default_priority": 3}}


@pytest.fixture(scope="session")
def celery_worker_pool():
    return "threads"


@pytest.fixture(scope="session")
def celery_includes():
    return ["user_tasks"]


@pytest.fixture(scope="session")
def celery_worker_parameters():
    return {{"queues": ["celery", "extra"], "concurrency": 2}}


@pytest.fixture(scope="session")
def celery_session_app(celery_session_app):
    # Tasks of the session app, as a project's conftest would hang them on it.
    import user_tasks

    user_tasks.register(celery_session_app)
    return celery_session_app
'''

USER_TASKS = '''
included = None


def register(app):
    global included

    @app.task(name="user_tasks.included", queue="extra")
    def included_task():
        return "included"

    included = included_task
'''


def run_user_pytest(path: Path, *args: str, plugins: str = "") -> subprocess.CompletedProcess[str]:
    """Run pytest on a small project of tests that use the fixtures; an unknown marker
    is an error, so the plugin must have declared ``celery``."""
    (path / "conftest.py").write_text(USER_CONFTEST.format(plugins=plugins))
    (path / "user_tasks.py").write_text(USER_TASKS)
    (path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--strict-markers", *args], cwd=path, capture_output=True, text=True,
                          timeout=120)


def test_a_users_project_gets_celerys_fixtures(tmp_path: Path) -> None:
    proc = run_user_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed" in proc.stdout


def test_listing_the_plugin_as_celerys_docs_say_loads_it_once(tmp_path: Path) -> None:
    proc = run_user_pytest(tmp_path, plugins='pytest_plugins = ("celeriac.contrib.pytest",)')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_user_pytest(tmp_path, "-p", "celeriac.contrib.pytest")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_plugin_can_be_turned_off(tmp_path: Path) -> None:
    proc = run_user_pytest(tmp_path, "-p", "no:celeriac.contrib.pytest")
    assert proc.returncode != 0
    assert "'celery' not found in `markers` configuration option" in proc.stdout
    (tmp_path / "test_user.py").write_text("def test_app(celery_app):\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                           "no:celeriac.contrib.pytest"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "fixture 'celery_app' not found" in proc.stdout
