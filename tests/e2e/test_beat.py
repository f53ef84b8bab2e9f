"""End to end: ``celeriac beat`` and ``worker -B`` as real processes, several beats on one
broker with one SIGKILLed (each run of a 1 s entry is sent exactly once: a minute on Redis,
as issue 11 asks, ~14 s on SQLite), ``beat --list``.

Runs are counted by the scheduled time each message carries (``beat_run_at`` header); no
assertion is about speed, only about exactly-once and the absence of long gaps.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import Project, Worker, wait_until

from celeriac.brokers import broker_from_url
from celeriac.message import decode

#: A 1 s entry whose task records the run it was sent for; a queue of its own, so the
#: test can also read the messages themselves.
BEAT_TASKS = '''
from datetime import timedelta

@app.task(bind=True)
def tick(self, path):
    headers = self.request.headers or {}
    with open(path, "a") as f:
        f.write(f"{headers.get('beat_entry')} {headers.get('beat_run_at')!r} {self.request.id}\\n")

app.conf.beat_schedule = {
    "every-second": {"task": "tasks.tick", "schedule": timedelta(seconds=1),
                     "args": [RECORD], "options": {"queue": QUEUE}},
}
'''
#: Slack on top of the takeover bound (no takeover delay: every beat races for every run)
#: for a gap between two runs, for a loaded machine that stalls every beat at once.
GAP_SLACK = 3.0


def beat_project(project: Project, queue: str = "periodic") -> Path:
    record = project.path / "runs.txt"
    project.write_tasks(f"RECORD = {str(record)!r}\nQUEUE = {queue!r}\n" + BEAT_TASKS)
    return record


def start_beat(project: Project, *args: str) -> Worker:
    """``celeriac -A tasks beat`` as a subprocess (kept in ``project.workers`` for clean-up)."""
    log_path = project.path / f"beat-{len(project.workers)}.log"
    argv = [sys.executable, "-m", "celeriac", "-A", "tasks", "beat", "-l", "DEBUG", *args]
    proc = subprocess.Popen(argv, cwd=project.path, env=project.env, text=True,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    beat = Worker(proc, log_path, argv)
    project.workers.append(beat)
    beat.wait_for_log("periodic task(s)", timeout=30)
    return beat


def recorded(record: Path) -> list[float]:
    if not record.exists():
        return []
    return [float(line.split()[1]) for line in record.read_text().splitlines()
            if line.startswith("every-second ")]


def queued_runs(url: str, queue: str) -> list[float]:
    """The scheduled times of every message in ``queue`` (all of them taken out)."""
    broker = broker_from_url(url)
    times = []
    while got := broker.fetch([queue], 500, consumer="test", lease=60):
        times += [decode(d.body).headers["beat_run_at"] for d in got]
        broker.ack(got)
    broker.close()
    return times


def assert_each_run_once(times: list[float], *, at_least: int) -> None:
    twice = [t for t, n in Counter(times).items() if n > 1]
    assert not twice, f"runs sent more than once: {twice}"
    ordered = sorted(times)
    assert len(ordered) >= at_least, ordered
    steps = [b - a for a, b in pairwise(ordered)]
    # On the grid of the first run: every step a whole number of seconds, 1 unless every
    # beat was stalled at once (then the newest missed run is sent once, not a burst).
    assert all(abs(step - round(step)) < 1e-3 and round(step) >= 1 for step in steps), steps
    assert max(steps) <= 1 + GAP_SLACK, steps


def test_beat_sends_a_1s_entry_that_a_worker_runs(project: Project) -> None:
    record = beat_project(project)
    worker = project.start_worker("-P", "threads", "-c", "2", "-Q", "periodic")
    beat = start_beat(project)
    wait_until(lambda: len(recorded(record)) >= 3, timeout=30, message="three runs")
    assert beat.stop() == 0
    assert "Scheduler: Sending due task every-second (tasks.tick)" in beat.log()
    assert worker.stop() == 0
    assert_each_run_once(recorded(record), at_least=3)


#: (broker, seconds before the kill, seconds after it) for the three-beat race.
RACES = [
    # Redis is the distributed engine (beats on several hosts): the full minute issue 11
    # asks for, so that ~60 runs are raced for and the takeover is followed for 30 s.
    pytest.param("redis", 30.0, 30.0, id="redis-60s"),
    # SQLite takes its runs through the same claim protocol on another engine; a shorter
    # race still has every beat racing for ~14 runs and two survivors after the kill.
    pytest.param("sqlite", 6.0, 8.0, id="sqlite-14s"),
]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("kind", "before", "after"), RACES)
def test_three_beats_one_sigkilled_send_each_run_exactly_once(
        kind: str, before: float, after: float, project: Project,
        request: pytest.FixtureRequest) -> None:
    """Three beats race for every run for ``before + after`` seconds; the one that sent the
    newest run is SIGKILLed after ``before``. The messages in the broker hold every run of
    the 1 s entry exactly once, without a gap."""
    if kind == "redis":
        project = request.getfixturevalue("redis_project")
    beat_project(project, queue="periodic")
    beats = [start_beat(project) for _ in range(3)]
    wait_until(lambda: any("Sending due task" in beat.log() for beat in beats), timeout=30,
               message="a beat sent a run")
    time.sleep(before)
    victim = max(beats, key=last_send)  # the beat that sent the newest run
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    killed_at = time.time()
    time.sleep(after)
    survivors = [beat for beat in beats if beat is not victim]
    for beat in survivors:
        assert beat.stop() == 0
    times = queued_runs(project.broker_url, "periodic")
    # Four fifths of the seconds raced (15 of 18 before the race lengths differed): room
    # for a loaded machine stalling every beat at once, each stall bounded by GAP_SLACK.
    assert_each_run_once(times, at_least=int(0.8 * (before + after)))
    assert max(times) > killed_at + after - 2  # the others went on sending after the kill
    sent_by = [beat.log().count("Sending due task") for beat in beats]
    assert sum(sent_by) == len(times), (sent_by, len(times))  # each send logged by one beat


def last_send(beat: Worker) -> str:
    """The log timestamp of the beat's newest send ('' if none): lines sort by it."""
    sends = [line for line in beat.log().splitlines() if "Sending due task" in line]
    return sends[-1][:24] if sends else ""


def test_worker_with_embedded_beat(project: Project) -> None:
    record = beat_project(project, queue="celery")
    worker = project.start_worker("-P", "threads", "-c", "2", "-B", "-s", "celerybeat-schedule")
    wait_until(lambda: len(recorded(record)) >= 2, timeout=30, message="two runs")
    status = project.status()  # the beat's own heartbeat, apart from the worker's
    [beat] = status["beats"]
    assert beat["worker"] == status["workers"][0]["name"] and beat["entries"] == ["every-second"]
    assert worker.stop() == 0
    assert project.status()["beats"] == []  # removed when the worker stopped
    assert "--schedule celerybeat-schedule: not used" in worker.log()
    assert_each_run_once(recorded(record), at_least=2)


def test_beat_list_prints_each_entry_with_its_next_run(project: Project) -> None:
    beat_project(project)
    out = project.cli("-A", "tasks", "beat", "--list").stdout
    assert "every-second  task=tasks.tick  schedule=<freq: 1s>  last=never  next=" in out
    beat = start_beat(project)
    beat.wait_for_log("Sending due task", timeout=30)
    assert beat.stop() == 0
    out = project.cli("-A", "tasks", "beat", "--list").stdout
    assert "last=never" not in out and "next=" in out
    refused = project.cli("-A", "tasks", "beat", "-S", "custom.Scheduler", check=False)
    assert refused.returncode == 1 and "cannot replace it" in refused.stderr
