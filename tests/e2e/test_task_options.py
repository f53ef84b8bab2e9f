"""Task options, end to end: the real ``celeriac -A tasks worker`` on a SQLite broker.

``throws`` changes only how a failure is logged (INFO, no traceback, as Celery
does); ``acks_on_failure_or_timeout=False`` sends the message of a task that
failed, or passed its hard time limit, to the dead-letter store instead of
acking it, after one run, with its FAILURE stored; the worker lists a task's
cluster-wide ``rate_limit`` at start.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import Project, executions, wait_until

from celeriac import TimeLimitExceeded

EXTRA = r'''
def _note(path, request):
    with open(path, "a") as f:
        f.write(f"{request.id} {os.getpid()}\n")

@app.task(throws=(KeyError,))
def lookup(key):
    raise KeyError(key)

@app.task
def broken(key):
    raise KeyError(key)

@app.task(bind=True, acks_on_failure_or_timeout=False)
def keep_failed(self, path):
    _note(path, self.request)
    raise ValueError("to the dead letters")

@app.task(bind=True, acks_on_failure_or_timeout=False, time_limit=1)
def keep_slow(self, path):
    _note(path, self.request)
    time.sleep(30)

@app.task(rate_limit="10/m")
def limited():
    return 1
'''


def test_throws_logging_acks_on_failure_or_timeout_and_rate_limit_notice(
        project: Project, tmp_path: Path) -> None:
    project.write_tasks(EXTRA)
    project.app()
    tasks = sys.modules["tasks"]
    runs = tmp_path / "runs.txt"
    worker = project.start_worker("-P", "threads", "-c", "2")
    assert "task tasks.limited: at most 10/m across every worker of the broker" in worker.log()

    expected, unexpected = tasks.lookup.delay("alice"), tasks.broken.delay("bob")
    for result in (expected, unexpected):
        with pytest.raises(KeyError):
            result.get(timeout=30)
    log = worker.log()
    [line] = [ln for ln in log.splitlines() if expected.id in ln]
    assert "INFO" in line and "raised expected KeyError: 'alice'" in line
    after = log.split(unexpected.id, 1)[1]
    assert "ERROR" in log.split(unexpected.id, 1)[0].rsplit("\n", 1)[1]
    assert "Traceback (most recent call last)" in after and "raise KeyError(key)" in after
    assert log.count("Traceback") == 1, "only the unexpected failure logs a traceback"

    failed = tasks.keep_failed.delay(str(runs))
    with pytest.raises(ValueError, match="to the dead letters"):
        failed.get(timeout=30)
    slow = tasks.keep_slow.delay(str(runs))
    with pytest.raises(TimeLimitExceeded):
        slow.get(timeout=30)
    letters = wait_until(lambda: len(tasks.app.broker.dead_letters()) == 2 and
                         tasks.app.broker.dead_letters(), message="two dead letters")
    reasons = sorted(letter.reason for letter in letters)
    assert reasons == ["task failed with ValueError and acks_on_failure_or_timeout is False",
                       "task timed out and acks_on_failure_or_timeout is False"]
    counts = project.queue()
    assert (counts["ready"], counts["in_flight"], counts["dead"]) == (0, 0, 2), counts
    # One run each: dead-lettered, not delivered again.
    assert [len(executions(runs)[r.id]) for r in (failed, slow)] == [1, 1]
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    assert worker.stop() == 0
