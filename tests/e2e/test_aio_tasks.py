"""``async def`` tasks on every pool, end to end: a real worker per pool.

Each pool (``-P asyncio`` too) starts ONE worker (``-c 2``, SQLite broker) for all the
tests of that pool
(module-scoped fixtures, parametrized by pool); the tests only send tasks and read
their own results, and none leaves anything running for the next one.

What must hold on every pool (``docs/asyncio.md``): the coroutine's value is the
result; ``self.request`` is right inside it; a soft limit is raised inside it (it may
catch it and still return); a hard limit ends it as ``TimeLimitExceeded``, in the
process, acked and not redelivered; a loop blocked past a hard limit gets the process
replaced, the culprit named; ``revoke(terminate=True)`` ends it REVOKED at its await;
a coroutine holding the loop is reported while it blocks (task name and id, the
blocking line, a ``task-blocked`` event, the count in ``celeriac status``) on every
pool; a value JSON cannot carry fails as for a sync task; ``asyncio.to_thread``,
``asyncio.sleep`` and a TCP connection to 127.0.0.1 work inside it (on the green
pools too, where the loop's thread must stay native).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from conftest import Project, Worker, stop_project, wait_until

from celeriac import TimeLimitExceeded

POOLS = ["solo", "threads", "prefork", "gevent", "eventlet", "asyncio"]

#: Added to the project's tasks.py.
EXTRA = r'''
import asyncio, threading
from celeriac import SoftTimeLimitExceeded

@app.task
async def aadd(x, y):
    await asyncio.sleep(0.01)
    return x + y

@app.task(bind=True)
async def arequest(self):
    await asyncio.sleep(0)
    return [self.request.id, self.request.task, self.request.retries, os.getpid()]

@app.task(soft_time_limit=0.5)
async def asoft():
    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        await asyncio.sleep(0.01)  # cleaning up may await
        return "cleaned up"
    return "not interrupted"

@app.task(time_limit=1)
async def ahard(path):
    try:
        await asyncio.sleep(30)
    finally:
        with open(path, "w") as f:
            f.write("unwound")

@app.task(time_limit=1)
async def ablock():
    time.sleep(5)  # holds the event loop past the hard limit: only a new process helps

@app.task
async def agate(gate, marker):
    with open(marker, "w") as f:
        f.write("started")
    try:
        while not os.path.exists(gate):
            await asyncio.sleep(0.02)
    except BaseException as exc:
        with open(marker, "w") as f:
            f.write(type(exc).__name__)
        raise
    return "let go"

@app.task
async def ahog(seconds):
    await asyncio.sleep(0)
    end = time.monotonic() + seconds
    while time.monotonic() < end: pass  # the blocking line
    return seconds

@app.task
async def abad():
    return object()

@app.task
async def aio_io():
    """to_thread, sleep and a TCP round trip to 127.0.0.1, all on the loop."""
    native = await asyncio.to_thread(lambda: threading.current_thread().name)
    await asyncio.sleep(0.05)

    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    server.close()
    return [bool(native), line.decode().strip()]
'''


@pytest.fixture(scope="module", params=POOLS)
def pool(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@dataclass
class Node:
    project: Project
    tasks: ModuleType
    worker: Worker


@pytest.fixture(scope="module")
def node(pool: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One worker of ``pool`` (``-c 2``) for every test of this module."""
    path = tmp_path_factory.mktemp(f"aio-{pool}")
    project = Project(path, f"sqlite:///{path / 'celeriac.db'}")
    project.write_tasks(EXTRA)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CELERIAC_BROKER_URL", project.broker_url)
        patch.setenv("CELERIAC_RESULT_BACKEND", project.broker_url)
        project.app()
        tasks = sys.modules["tasks"]
        assert tasks.app.broker and tasks.app.backend
        worker = project.start_worker("-P", pool, "-c", "2", "-E")
        try:
            yield Node(project, tasks, worker)
            assert worker.stop() == 0, worker.log()
        finally:
            stop_project(project)
            tasks.app.close()


def settled(project: Project) -> None:
    wait_until(lambda: project.queue()["in_flight"] == 0, message="every message settled")
    counts = project.queue()
    assert counts["ready"] == 0 and counts["dead"] == 0, counts


def test_value_and_request_inside_the_coroutine(node: Node) -> None:
    tasks = node.tasks
    results = [tasks.aadd.delay(i, i) for i in range(10)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]
    result = tasks.arequest.delay()
    task_id, name, retries, _pid = result.get(timeout=30)
    assert (task_id, name, retries) == (result.id, "tasks.arequest", 0)

    def kinds() -> list[str] | None:
        found = [e.type for e in tasks.app.broker.events(after=0, limit=100_000)
                 if e.data.get("uuid") == result.id]
        return found if "task-succeeded" in found else None

    # -E task events, as for a sync task.
    assert wait_until(kinds, message="task events") == [
        "task-received", "task-started", "task-succeeded"]


def test_soft_limit_is_raised_inside_the_coroutine(node: Node) -> None:
    assert node.tasks.asoft.delay().get(timeout=30) == "cleaned up"


def test_hard_limit_fails_the_task_in_process(node: Node, tmp_path: Path) -> None:
    marker = tmp_path / "unwound"
    children = node.worker.children()
    result = node.tasks.ahard.delay(str(marker))
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    assert result.status == "FAILURE"
    assert marker.read_text() == "unwound", "the coroutine was not ended at its await"
    settled(node.project)
    time.sleep(2.5)  # past the supervisor's grace: it must not have stepped in
    assert node.worker.children() == children, "the process was replaced"
    assert f"tasks.ahard[{result.id}]" not in _supervisor_kills(node.worker)


def test_revoke_terminate_cancels_the_coroutine(node: Node, tmp_path: Path) -> None:
    gate, marker = tmp_path / "gate", tmp_path / "marker"
    children = node.worker.children()
    result = node.tasks.agate.delay(str(gate), str(marker))
    wait_until(marker.exists, message="the task started")
    result.revoke(terminate=True)
    wait_until(lambda: result.state == "REVOKED", timeout=20, message="REVOKED")
    assert marker.read_text() == "Terminated", "the coroutine did not see the terminate"
    settled(node.project)
    assert node.worker.children() == children, "the process was replaced"


def test_unserialisable_value_fails_as_for_a_sync_task(node: Node) -> None:
    result = node.tasks.abad.delay()
    with pytest.raises(Exception, match="cannot be encoded as JSON"):
        result.get(timeout=30)
    assert result.status == "FAILURE"


def test_to_thread_sleep_and_tcp_inside_the_coroutine(node: Node) -> None:
    assert node.tasks.aio_io.delay().get(timeout=30) == [True, "ping"]


def test_a_coroutine_blocking_the_loop_is_reported_with_its_stack(node: Node) -> None:
    tasks, worker = node.tasks, node.worker
    children = worker.children()  # two on prefork
    hog = tasks.ahog.delay(0.6)
    assert hog.get(timeout=30) == 0.6
    worker.wait_for_log(f"tasks.ahog[{hog.id}] blocked the event loop")
    log_text = worker.log()
    # Named while it still blocked, with the loop thread's stack down to the blocking line.
    assert any(f"task tasks.ahog[{hog.id}] is blocking the event loop of worker process {child} "
               "(all its other tasks wait); blocking call:" in log_text for child in children), log_text
    source = (node.project.path / "tasks.py").read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1) if "the blocking line" in text)
    assert f'tasks.py", line {line}, in ahog' in log_text, log_text
    assert "while time.monotonic() < end: pass" in log_text

    def blocked() -> dict[str, str] | None:
        found = [e.data for e in tasks.app.broker.events(after=0, limit=100_000)
                 if e.type == "task-blocked" and e.data.get("id") == hog.id]
        return found[0] if found else None

    event = wait_until(blocked, message="the task-blocked event")
    assert event["task"] == "tasks.ahog" and "in ahog" in event["stack"], event

    def stalls() -> dict[str, int] | None:
        [info] = node.project.status()["workers"]
        counted: dict[str, int] = info["stalls"]
        return counted if counted.get("tasks.ahog") else None

    wait_until(stalls, timeout=10, message="the stall counted in celeriac status")


def test_a_blocked_loop_gets_the_process_replaced(node: Node, pool: str) -> None:
    """Last: it costs the pool a new process."""
    children = node.worker.children()
    result = node.tasks.ablock.delay()
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    wait_until(lambda: f"tasks.ablock[{result.id}]" in _supervisor_kills(node.worker),
               message="the supervisor named the task that held the loop")
    if pool not in ("gevent", "eventlet"):  # there time.sleep is patched: it runs a hub
        # The loop monitor named it first; the supervisor blamed it as the blocker.
        log_text, kills = node.worker.log(), _supervisor_kills(node.worker)
        assert any(f"task tasks.ablock[{result.id}] is blocking the event loop of worker process "
                   f"{victim}" in log_text for victim in children), log_text
        assert any(f"task tasks.ablock[{result.id}] blocked the event loop of worker process "
                   f"{victim} past its hard time limit" in kills for victim in children), kills
    wait_until(lambda: node.worker.children() and node.worker.children() != children,
               message="the process replaced")
    node.project.wait_ready(node.worker)
    assert node.tasks.aadd.delay(1, 2).get(timeout=30) == 3
    settled(node.project)


def _supervisor_kills(worker: Worker) -> str:
    """The supervisor's lines naming a task it fails before killing its process."""
    return "\n".join(line for line in worker.log().splitlines() if "killing the process" in line)
