"""Chords through a real ``celeriac worker``, on SQLite and Redis: the body sent by the
member that completes the header, once, even when a member's worker is SIGKILLed mid-way;
a failing member failing the chord with ``ChordError``; a chord written by Celery's client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, compare_python, needs_celery, project_on, wait_until

from celeriac.brokers import OutgoingMessage

EXTRA = '''
@app.task
def tsum(values):
    return sum(values)

@app.task
def on_err(request, exc, traceback):
    with open(os.environ["CHORD_LOG"], "a") as f:
        f.write(f"errback {request.id} {type(exc).__name__} {exc}\\n")

@app.task(acks_late=True)
def slow_pid(x, marker):
    # Tell the test which process runs it, then give it time to kill that process.
    import time
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    return x

@app.task
def counted_sum(values, path):
    with open(path, "a") as f:
        f.write("run\\n")
    return sum(values)

# Armed by the test: the worker process that sent a chord's body dies before it records
# that it did (chord_done), once -- the firing member's worst moment. This app's backend
# only (an instance attribute), so nothing leaks into other tests.
_chord_done = app.backend.chord_done

def _die_before_done(group_id):
    arm = os.path.join(os.environ.get("CHORD_DIR", "/nonexistent"), "arm")
    if os.path.exists(arm):
        os.rename(arm, arm + ".fired")
        os._exit(1)
    return _chord_done(group_id)

app.backend.chord_done = _die_before_done
'''


@pytest.fixture(params=BROKER_KINDS)
def chords(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> tuple[Project, Any, Path]:
    project: Project = project_on(request, request.param)
    log = tmp_path / "chord.log"
    monkeypatch.setenv("CHORD_LOG", str(log))
    monkeypatch.setenv("CHORD_DIR", str(tmp_path))
    project.write_tasks(EXTRA)
    project.start_worker("-P", "threads", "-c", "4")
    return project, project.app(), log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_chord_of_ten_sums_its_header(chords: tuple[Project, Any, Path]) -> None:
    _, app, _ = chords
    from celeriac import chord, group

    add, tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    result = chord([add.s(i, i) for i in range(10)], tsum.s()).apply_async()
    assert result.get(timeout=60) == 90
    assert result.parent.get(timeout=10) == [2 * i for i in range(10)]
    called = chord(group(add.s(1, 1), add.s(2, 2)))(tsum.s())
    assert called.get(timeout=60) == 6
    piped = (add.s(1, 1) | group(add.s(10), add.s(20)) | tsum.s()).delay()
    assert piped.get(timeout=60) == 34
    assert piped.parent.get(timeout=10) == [12, 22] and piped.parent.parent.get(timeout=10) == 2
    assert (group(add.s(1, 2), add.s(3, 4)) | tsum.s()).delay().get(timeout=60) == 10
    chains = group(add.s(1, 1) | add.s(10), add.s(2, 2) | add.s(20) | add.s(100)).delay()
    assert chains.get(timeout=60) == [12, 124]
    headed = chord([add.s(1, 1) | add.s(10) | add.s(100), add.s(2, 2)], tsum.s()).delay()
    assert headed.get(timeout=60) == 116
    assert headed.parent.get(timeout=10) == [112, 4]
    # A chain as the body: the chord's result is its last step's, leading back to the header.
    chained = chord([add.s(i, i) for i in range(3)], tsum.s() | add.s(10)).delay()
    assert chained.get(timeout=60) == 16 and chained.parent.get(timeout=10) == 6
    assert chained.parent.parent.get(timeout=10) == [0, 2, 4]
    # A group as the body: each member gets the header's values; the result is its group's.
    grouped = chord([add.s(1, 1), add.s(2, 2)], group(tsum.s(), tsum.s() | add.s(100))).delay()
    assert grouped.get(timeout=60) == [6, 106] and grouped.parent.get(timeout=10) == [2, 4]
    # A chord inside a group: sent as a chord, its body's result in its place.
    mixed = group(chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(5, 5)).delay()
    assert mixed.get(timeout=60) == [6, 10]


def test_a_failing_member_fails_the_chord_naming_it(chords: tuple[Project, Any, Path]) -> None:
    _, app, log = chords
    from celeriac import chord, group
    from celeriac.exceptions import ChordError

    add, fail, tsum, on_err = (app.tasks[f"tasks.{n}"] for n in ("add", "fail", "tsum", "on_err"))
    result = chord([add.s(1, 1), fail.s("boom"), add.s(2, 2)],
                   tsum.s().on_error(on_err.s())).apply_async()
    failed_id = result.parent.results[1].id
    with pytest.raises(ChordError, match=failed_id):
        result.get(timeout=60)
    wait_until(lambda: _lines(log), timeout=30, message="the body's errback ran")
    [line] = _lines(log)
    assert line.startswith(f"errback {result.id} ChordError") and failed_id in line
    # A group body: every member gets the ChordError, and runs the chord's errback once.
    grouped = chord([fail.s("boom")], group(tsum.s(), tsum.s())).on_error(on_err.s()).delay()
    for member in grouped.results:
        with pytest.raises(ChordError, match="boom"):
            member.get(timeout=60)
    wait_until(lambda: len(_lines(log)) == 3, timeout=30, message="one errback per member")
    assert sorted(line.split()[1] for line in _lines(log)[1:]) == sorted(
        member.id for member in grouped.results)
    # A chain body: every step gets it.
    chained = chord([fail.s("boom")], tsum.s() | add.s(1)).delay()
    for step in (chained, chained.parent):
        with pytest.raises(ChordError, match="boom"):
            step.get(timeout=60)
    # A chain in the header stopped by a failure before its last task fails the chord too.
    stopped = chord([add.s(1, 1) | fail.s() | add.s(5), add.s(2, 2)], tsum.s()).delay()
    chain_last = stopped.parent.results[0].id
    with pytest.raises(ChordError, match=chain_last):
        stopped.get(timeout=60)


def test_a_member_killed_mid_way_fires_the_body_exactly_once(
        chords: tuple[Project, Any, Path], tmp_path: Path) -> None:
    project, app, _ = chords
    from celeriac import chord

    marker, runs = tmp_path / "pids.txt", tmp_path / "runs.txt"
    slow, body = app.tasks["tasks.slow_pid"], app.tasks["tasks.counted_sum"]
    result = chord([slow.s(i, str(marker)) for i in range(6)],
                   body.s(str(runs))).apply_async()
    wait_until(lambda: _lines(marker), timeout=30, message="a member started")
    os.kill(int(_lines(marker)[0]), signal.SIGKILL)  # its process, with members running
    assert result.get(timeout=120) == 15
    assert result.parent.get(timeout=10) == list(range(6))
    assert len(_lines(marker)) > 6  # members ran again after the kill
    project.workers[0].stop()  # everything it held is settled: no copy still to come
    assert _lines(runs) == ["run"]


def test_the_firing_member_dying_after_sending_the_body_runs_it_once(
        chords: tuple[Project, Any, Path], tmp_path: Path) -> None:
    project, app, _ = chords
    from celeriac import chord

    runs = tmp_path / "runs.txt"
    (tmp_path / "arm").touch()
    add, body = app.tasks["tasks.add"], app.tasks["tasks.counted_sum"]
    result = chord([add.s(i, i) for i in range(4)], body.s(str(runs))).apply_async()
    assert result.get(timeout=120) == 12
    wait_until(lambda: (tmp_path / "arm.fired").exists(), timeout=30, message="the crash")
    # The member came back, fired again and sent a second copy: it is dropped unrun.
    wait_until(lambda: "already claimed" in project.workers[0].log(), timeout=60,
               message="the second copy of the body was refused")
    project.workers[0].stop()
    assert _lines(runs) == ["run"]


CELERY_CHORD = textwrap.dedent('''
    import json, sys
    from celery import Celery, chord, group
    # Celery's client with its Redis result backend on the celeriac backend's server: it
    # records the header's size there (its messages do not carry it).
    app = Celery("tasks", broker="memory://", backend=sys.argv[1])

    @app.task(name="tasks.add")
    def add(x, y): return x + y

    @app.task(name="tasks.tsum")
    def tsum(values): return sum(values)

    with app.connection() as conn:
        result = chord([add.s(i, i) for i in range(4)], tsum.s()).apply_async(connection=conn)
        # Its chord embed a chain, then a group: the body is sent as Celery's worker would.
        chained = chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(10)).apply_async(
            connection=conn)
        grouped = chord([add.s(1, 1), add.s(2, 2)], group(tsum.s(), tsum.s())).apply_async(
            connection=conn)
        print(json.dumps({"body": result.id, "chained": chained.id,
                          "grouped": [member.id for member in grouped.results],
                          "messages": [conn.default_channel._get("celery") for _ in range(8)]}))
''')


@needs_celery
def test_a_chord_sent_by_celery_completes_here(redis_project: Project) -> None:
    project = redis_project
    project.write_tasks(EXTRA)
    project.start_worker("-P", "threads", "-c", "4")
    app = project.app()
    python = compare_python()
    assert python is not None, "no venv with Celery: run ./scripts/test, or set CELERIAC_COMPARE_VENV"
    server = project.broker_url.split("?")[0]
    out = subprocess.run([str(python), "-c", CELERY_CHORD, server],
                         capture_output=True, timeout=120, check=True, text=True).stdout
    sent = json.loads(out)
    assert all("chord_size" not in json.dumps(m) for m in sent["messages"])
    app.broker.publish([OutgoingMessage(queue="celery", body=json.dumps(m).encode())
                        for m in sent["messages"]])
    assert app.AsyncResult(sent["body"]).get(timeout=60) == 12
    assert app.AsyncResult(sent["chained"]).get(timeout=60) == 16
    assert [app.AsyncResult(i).get(timeout=60) for i in sent["grouped"]] == [6, 6]
