"""What a task asks for once it ended, when its own process cannot do it: the supervisor
ends it (a hard time limit, a terminate, a crash on its last delivery) and runs its
follow-ups, so a chord still completes (failing, naming the member), a chain's later
tasks get the failure and the errbacks run. On SQLite and Redis, with a real prefork
worker (the pool whose tasks the supervisor kills)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, executions, project_on, wait_until

EXTRA = '''
app.conf.broker_max_deliveries = 2  # a task that kills its process is failed on its 2nd

@app.task
def tsum(values):
    return sum(values)

@app.task
def on_err(request, exc, traceback):
    with open(os.environ["FOLLOWUPS_LOG"], "a") as f:
        f.write(f"errback {request.id} {type(exc).__name__}\\n")

@app.task(time_limit=1)
def stuck():
    time.sleep(60)

@app.task
def die():
    os._exit(3)
'''


@pytest.fixture(params=BROKER_KINDS)
def worker(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> tuple[Project, Any, Path]:
    project: Project = project_on(request, request.param)
    log = tmp_path / "followups.log"
    monkeypatch.setenv("FOLLOWUPS_LOG", str(log))
    project.write_tasks(EXTRA)
    project.start_worker("-P", "prefork", "-c", "2")
    return project, project.app(), log


def _errbacks(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_the_supervisor_ends_a_task_and_does_its_followups(
        worker: tuple[Project, Any, Path], tmp_path: Path) -> None:
    _, app, log = worker
    from celeriac import chord
    from celeriac.exceptions import ChordError, TimeLimitExceeded, WorkerLostError

    add, tsum, on_err, stuck, die, record = (app.tasks[f"tasks.{n}"] for n in (
        "add", "tsum", "on_err", "stuck", "die", "record"))

    # Killed past its hard time limit: its chord fails naming it, the body's errback runs.
    timed = chord([add.s(1, 1), stuck.s()], tsum.s().on_error(on_err.s())).apply_async()
    member = timed.parent.results[1].id
    with pytest.raises(ChordError, match=member):
        timed.get(timeout=60)
    with pytest.raises(TimeLimitExceeded):
        timed.parent.results[1].get(timeout=10)

    # A chain step killed past its limit: the later steps fail with it, its errback runs
    # (in the supervisor, as Celery 5 calls an errback: request, exc, traceback).
    chained = (add.s(1, 1) | stuck.si() | add.s(5)).on_error(on_err.s()).delay()
    with pytest.raises(TimeLimitExceeded):
        chained.get(timeout=60)
    step = chained.parent.id
    wait_until(lambda: f"errback {step} TimeLimitExceeded" in _errbacks(log), timeout=30,
               message="the errback of the chain step killed at its time limit ran")

    # Revoked with terminate while it runs (prefork: the supervisor replaces the process).
    runs = tmp_path / "runs.txt"
    revoked = chord([record.s(str(runs), 60.0), add.s(2, 2)], tsum.s()).apply_async()
    victim = revoked.parent.results[0]
    wait_until(lambda: victim.id in executions(runs), timeout=30, message="the member started")
    victim.revoke(terminate=True)
    with pytest.raises(ChordError, match=victim.id):
        revoked.get(timeout=60)

    # A member whose process dies on its last delivery: WorkerLostError, the chord fails.
    lost = chord([add.s(3, 3), die.s()], tsum.s()).apply_async()
    dead = lost.parent.results[1].id
    with pytest.raises(ChordError, match=dead):
        lost.get(timeout=90)
    with pytest.raises(WorkerLostError):
        lost.parent.results[1].get(timeout=10)

    # The body's errback of the first chord ran once, in the supervisor or a process.
    assert [line for line in _errbacks(log) if line.startswith(f"errback {timed.id} ")] == [
        f"errback {timed.id} ChordError"]
