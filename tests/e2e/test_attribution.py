"""Crash attribution, end to end: a poison task among innocent ones on a multi-task pool.

A worker process running many tasks at once dies when one of them calls
``os._exit``. The supervisor cannot tell which one: none of them is charged a
delivery, all go back marked suspect, and run next in groups half as big. The
group holding the poison task crashes again and is halved again until the poison
task crashes a process it has to itself, is charged, and ends in the dead-letter
store after ``broker_max_deliveries`` runs alone; every innocent
task completes, none is dead-lettered. A real worker: ``-P threads`` on SQLite,
``-P gevent`` on Redis.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import Project, executions, gevent_patched, wait_until

from celeriac.exceptions import WorkerLostError

#: What is tested happens in worker processes and between nodes: a gevent-patched test
#: process adds nothing, and the gevent leg has no minute to spare for it.
pytestmark = pytest.mark.skipif(gevent_patched(), reason="worker-side only")

POISON = r'''
app.conf.update(broker_max_deliveries=2)


def _note(path, request):
    with open(path, "a") as f:
        f.write(f"{request.id} {os.getpid()}\n")


@app.task(bind=True)
def poison(self, path, wait):
    """Let the neighbours start, then take the whole process down."""
    _note(path, self.request)
    time.sleep(wait)
    os._exit(1)
'''



def load(project: Project) -> ModuleType:
    project.write_tasks(POISON)
    project.app()
    return sys.modules["tasks"]


def poison_among_innocents(project: Project, pool: str, concurrency: str, log: Path) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", pool, "-c", concurrency)
    innocents = [tasks.record.delay(str(log), 0.3) for _ in range(30)]
    poisons = [tasks.poison.delay(str(log), 0.2) for _ in range(2)]
    innocents += [tasks.record.delay(str(log), 0.3) for _ in range(30)]
    # Every innocent task completes, whatever it ran beside.
    for result in innocents:
        assert result.get(timeout=90) == result.id
    for result in poisons:
        with pytest.raises(WorkerLostError, match="died while running it alone on delivery 2 of 2"):
            result.get(timeout=60)
    letters = wait_until(lambda: (lambda d: d if len(d) >= 2 else None)(
        tasks.app.broker.dead_letters()), timeout=30, message="two dead letters")
    assert {letter.reason for letter in letters} == {
        "max deliveries (2) exceeded; it crashed its worker process while running alone"}
    assert len(letters) == 2, [letter.reason for letter in letters]
    runs = executions(log)
    for result in innocents:
        # Once, and once more for each crash it shared a group with the poison.
        assert 1 <= len(runs[result.id]) <= int(math.log2(int(concurrency))) + 1, runs[result.id]
    for result in poisons:
        # Uncharged runs in groups halved after each crash (at most log2(concurrency) of
        # them: 20 -> 10 -> 5 -> 2 -> alone), then its two runs alone.
        assert 2 <= len(runs[result.id]) <= int(math.log2(int(concurrency))) + 2, runs[result.id]
    wait_until(lambda: project.queue()["in_flight"] == 0, interval=0.2, message="all settled")
    assert project.queue() == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 2}
    text = worker.log()
    assert "they go back uncharged, marked suspect, and " in text
    assert "alone: its worker process died while it ran beside other tasks" in text
    assert worker.proc.poll() is None
    assert tasks.add.delay(2, 3).get(timeout=30) == 5


# Each pool on one broker, each broker with one pool: the pool decides how many share a
# crash (groups halved 8 -> 4 -> 2 -> 1 or 20 -> 10 -> 5 -> 2 -> 1), the broker how the
# suspects go back uncharged and are charged when alone; the supervisor's attribution
# between them is the same code whichever pool ran on whichever broker.
def test_a_poison_task_pays_alone_on_sqlite(project: Project, tmp_path: Path) -> None:
    poison_among_innocents(project, "threads", "8", tmp_path / "runs.txt")


def test_a_poison_task_pays_alone_on_redis(redis_project: Project, tmp_path: Path) -> None:
    # gevent's 20 slots: the most rounds of halving, on the distributed engine.
    poison_among_innocents(redis_project, "gevent", "20", tmp_path / "runs.txt")
