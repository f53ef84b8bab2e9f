"""Green pools end to end: patching, time limits and a blocked event loop, on real workers.

gevent and eventlet patch the whole process, so nothing here patches the test
process: every test starts real ``celeriac worker -P gevent`` (or ``eventlet``)
subprocesses, and the tasks themselves report what they saw (what is patched,
their pid, when they ran). A task body may import gevent or eventlet; the test
process never calls one.

What is checked, per test: patching happens first whichever way the pool is
chosen; a module imported too early is named in one warning;
``GEVENT_PATCHTHREAD=N`` keeps threads real and everything else working; soft and
hard limits interrupt a cooperative task without touching its neighbours or its
process; a task that never yields is named, charged and its process replaced
while its neighbours are delivered again at once; a task that blocks the loop
briefly is reported with its stack and counted in ``celeriac status``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from conftest import Project, Worker, executions, wait_until

from celeriac import TimeLimitExceeded
from celeriac.exceptions import WorkerLostError

#: Tasks added to the project's ``tasks.py`` for these tests.
GREEN_TASKS = r'''
from celeriac import SoftTimeLimitExceeded


def _note(path, request):
    with open(path, "a") as f:
        f.write(f"{request.id} {os.getpid()}\n")


@app.task
def gevent_patching():
    from gevent import monkey
    return {name: monkey.is_module_patched(name) for name in ("socket", "threading", "ssl")}


@app.task
def eventlet_patching():
    from eventlet import patcher
    return {name: patcher.is_monkey_patched(name) for name in ("socket", "thread", "time")}


@app.task
def interval(seconds):
    """Sleep (cooperatively, once patched) and say when this ran and where."""
    start = time.time()
    time.sleep(seconds)
    return [start, time.time(), os.getpid()]


@app.task
def busy_then_sleep(busy, seconds):
    """Spin ``busy`` s without switching, then sleep: where did the soft limit land?"""
    start = time.monotonic()
    while time.monotonic() - start < busy:
        pass
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return ["soft limit", time.monotonic() - start, os.getpid()]
    return ["no limit", time.monotonic() - start, os.getpid()]


@app.task
def hog(seconds):
    """Hold the event loop: a busy loop that never switches."""
    end = time.monotonic() + seconds
    while time.monotonic() < end: pass  # noqa: the blocking line
    return seconds


@app.task(bind=True)
def spinner(self, path):
    """Record the run, then hold the event loop (30 s: bounded, in case nobody kills it)."""
    _note(path, self.request)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        pass


@app.task(bind=True)
def nap_once(self, path, seconds):
    """Sleep ``seconds`` the first time this task id runs; return at once on a rerun."""
    first = not os.path.exists(path) or self.request.id not in open(path).read()
    _note(path, self.request)
    if first:
        time.sleep(seconds)
    return os.getpid()


@app.task
def parent(x, y):
    """Wait inside a task for another task's result (allowed explicitly, as in Celery)."""
    return [add.delay(x, y).get(timeout=10, disable_sync_subtasks=False), os.getpid()]
'''

#: A task that kills its process twice ends in the dead-letter store.
MAX_TWO = "\napp.conf.update(broker_max_deliveries=2)\n"
#: ... and a task past its hard limit goes back to the queue instead of failing.
REJECT_ON_LOST = "\napp.conf.update(broker_max_deliveries=2, task_reject_on_worker_lost=True)\n"
#: The warning a green worker process logs when patch-sensitive modules came first.
TOO_LATE = "were imported before"


def load(project: Project, settings: str = "") -> ModuleType:
    """Write ``tasks.py`` (conftest's tasks, :data:`GREEN_TASKS`, then ``settings``); import it."""
    project.write_tasks(GREEN_TASKS + settings)
    project.app()
    return sys.modules["tasks"]


def start(project: Project, argv: list[str], env: dict[str, str] | None = None) -> Worker:
    """Start ``argv`` in the project like ``project.start_worker``, with extra environment."""
    log_path = project.path / f"worker-{len(project.workers)}.log"
    with log_path.open("w") as out:
        proc = subprocess.Popen(argv, cwd=project.path, env={**project.env, **(env or {})},
                                text=True, stdout=out, stderr=subprocess.STDOUT)
    worker = Worker(proc, log_path, argv)
    project.workers.append(worker)
    project.wait_ready(worker)
    return worker


def celeriac_worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "celeriac", "-A", "tasks", "worker", "-l", "INFO", *args]


def stop(worker: Worker) -> None:
    """A warm shutdown that must succeed."""
    assert worker.stop() == 0, worker.log()


def concurrent(runs: list[list[float]]) -> bool:
    """True when all ``[start, end, ...]`` runs overlapped at one instant."""
    return max(run[0] for run in runs) < min(run[1] for run in runs)


def only_child(worker: Worker) -> int:
    [pid] = wait_until(lambda: worker.children() if len(worker.children()) == 1 else None,
                       message="one worker process")
    return int(pid)


# -- 1. patching comes first, however the pool is chosen --------------------------------------
WORKER_SCRIPT = '''
import sys
from tasks import app

sys.exit(app.worker_main(["worker", "-P", "gevent", "-c", "10"]))
'''


@pytest.mark.parametrize("how", ["-P gevent", "-Pgevent", "--pool=gevent", "env worker_pool",
                                 "conf worker_pool", "app.worker_main"])
def test_gevent_patches_first_however_the_pool_is_chosen(project: Project, how: str) -> None:
    tasks = load(project, '\napp.conf.worker_pool = "gevent"\n' if how == "conf worker_pool"
                 else "")
    env: dict[str, str] = {}
    if how == "app.worker_main":
        (project.path / "run_worker.py").write_text(WORKER_SCRIPT)
        argv = [sys.executable, "run_worker.py"]
    elif how.endswith("worker_pool"):
        env = {"CELERIAC_WORKER_POOL": "gevent"} if how.startswith("env") else {}
        argv = celeriac_worker("-c", "10")
    else:
        argv = celeriac_worker(*how.split(), "-c", "10")
    worker = start(project, argv, env)
    assert "gevent 1x10" in worker.log(), worker.log()
    assert tasks.gevent_patching.delay().get(timeout=30) == {
        "socket": True, "threading": True, "ssl": True}
    assert TOO_LATE not in worker.log()
    stop(worker)
    assert TOO_LATE not in worker.log()


def test_modules_imported_before_patching_are_named_once(project: Project,
                                                          tmp_path: Path) -> None:
    tasks = load(project)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import ssl\n")
    worker = start(project, celeriac_worker("-P", "gevent", "-c", "10"),
                   {"PYTHONPATH": str(site)})
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    assert tasks.interval.delay(0.1).get(timeout=30)[2] == only_child(worker)
    warnings = [line for line in worker.log().splitlines() if TOO_LATE in line]
    assert len(warnings) == 1, worker.log()
    assert re.search(r"modules .*\bssl\b.* were imported before gevent patching", warnings[0])
    stop(worker)


# -- 3. GEVENT_PATCHTHREAD=N ------------------------------------------------------------------
def test_patchthread_n_keeps_real_threads_and_everything_works(project: Project) -> None:
    tasks = load(project)
    worker = start(project, celeriac_worker("-P", "gevent", "-c", "50"),
                   {"GEVENT_PATCHTHREAD": "N"})
    assert tasks.gevent_patching.delay().get(timeout=30) == {
        "socket": True, "threading": False, "ssl": True}
    soft = tasks.busy_then_sleep.apply_async((0, 10), soft_time_limit=0.5)
    assert tasks.parent.delay(2, 3).get(timeout=30)[0] == 5
    assert soft.get(timeout=30)[0] == "soft limit"
    runs = [r.get(timeout=60) for r in [tasks.interval.delay(1.0) for _ in range(50)]]
    assert concurrent(runs), "50 sleeping tasks on -c 50 did not all run at once"
    assert len({run[2] for run in runs}) == 1
    stop(worker)


# -- 4. time limits interrupt the greenlet, not the process -----------------------------------
def test_gevent_soft_limit_raises_at_the_next_switch(project: Project) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", "gevent", "-c", "10", "--soft-time-limit", "0.3")
    sleeping = tasks.busy_then_sleep.delay(0, 10)
    # Spinning past the limit: the exception waits for the sleep that follows.
    spinning = tasks.busy_then_sleep.delay(1.0, 10)
    marker, elapsed, _ = sleeping.get(timeout=30)
    assert marker == "soft limit" and 0.25 < elapsed < 5, (marker, elapsed)
    marker, elapsed, _ = spinning.get(timeout=30)
    assert marker == "soft limit" and 1.0 <= elapsed < 5, (marker, elapsed)
    stop(worker)


def test_gevent_hard_limit_kills_the_greenlet_not_the_process(project: Project) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", "gevent", "-c", "10", "--time-limit", "1")
    child = only_child(worker)
    neighbours = [tasks.interval.apply_async((3.0,), time_limit=20) for _ in range(3)]
    stuck = tasks.sleep.delay(30)
    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=30)
    # The neighbours outlive the supervisor's deadline for the stuck task (limit + grace).
    runs = [r.get(timeout=30) for r in neighbours]
    assert {run[2] for run in runs} == {child}, "a neighbour ran in another process"
    assert concurrent(runs)
    assert worker.children() == [child], "the process was replaced"
    assert "killing" not in worker.log()
    assert tasks.pid.delay().get(timeout=30) == child
    stop(worker)


# -- 5. a task that never switches: the supervisor replaces the process -----------------------
def block_the_loop(project: Project, tasks: ModuleType, worker: Worker,
                   log: Path) -> tuple[int, list[str], str]:
    """Start three cooperative sleepers, then a spinner that holds the loop past its hard
    limit (1 s); wait until the process is replaced and the sleepers have run again.

    Returns the replaced pid, the sleepers' ids and the spinner's id.
    """
    victim = only_child(worker)
    sleepers = [tasks.nap_once.apply_async((str(log), 20), time_limit=30) for _ in range(3)]
    wait_until(lambda: len(executions(log)) == 3, message="sleepers started")
    spinner = tasks.spinner.delay(str(log))
    wait_until(lambda: spinner.id in executions(log), message="spinner started")
    killed = wait_until(lambda: victim not in worker.children() and time.monotonic(),
                        message=f"process {victim} killed")
    only_child(worker)
    # Delivered again at once, not after the 30 s lease: they run again right away
    # (and return at once on their second run).
    wait_until(lambda: all(len(executions(log).get(s.id, [])) >= 2 for s in sleepers),
               timeout=10, message="sleepers delivered again")
    for sleeper in sleepers:
        assert sleeper.get(timeout=20) != victim
        assert executions(log)[sleeper.id][0] == victim
    assert time.monotonic() - killed < 15, "the sleepers waited for their leases"
    log_text = worker.log()
    assert (f"task tasks.spinner[{spinner.id}] blocked the event loop of worker process {victim} "
            "past its hard time limit; ") in log_text, log_text
    return victim, [s.id for s in sleepers], spinner.id


def failed_spinner(project: Project, tasks: ModuleType, spinner: str, log: Path) -> None:
    """The spinner passed its hard limit: it failed once, acked, not run again."""
    with pytest.raises(TimeLimitExceeded):
        tasks.app.AsyncResult(spinner).get(timeout=30)
    wait_until(lambda: project.queue()["in_flight"] == 0, interval=0.2, message="all settled")
    assert project.queue() == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 0}
    assert len(executions(log)[spinner]) == 1, executions(log)[spinner]


def dead_spinner(project: Project, tasks: ModuleType, spinner: str, log: Path) -> None:
    """A spinner with reject_on_worker_lost killed two processes: it ends in the
    dead-letter store, failed."""
    with pytest.raises(WorkerLostError):
        tasks.app.AsyncResult(spinner).get(timeout=30)
    [letter] = wait_until(tasks.app.broker.dead_letters, message="spinner dead-lettered")
    assert "max deliveries (2)" in letter.reason, letter.reason
    assert len(executions(log)[spinner]) == 2, executions(log)[spinner]
    wait_until(lambda: project.queue()["in_flight"] == 0, interval=0.2, message="all settled")
    assert project.queue() == {"ready": 0, "scheduled": 0, "in_flight": 0, "dead": 1}


def test_gevent_hub_blocked_past_hard_limit_replaces_the_process(project: Project,
                                                                 tmp_path: Path) -> None:
    tasks = load(project, MAX_TWO)
    log = tmp_path / "runs.txt"
    worker = project.start_worker("-P", "gevent", "-c", "10", "--time-limit", "1")
    victim, _, spinner = block_the_loop(project, tasks, worker, log)
    # The monitor thread named the spinner while the loop was still blocked.
    assert f"task tasks.spinner[{spinner}] is blocking the event loop of worker process {victim}" \
        in worker.log()
    failed_spinner(project, tasks, spinner, log)
    assert worker.proc.poll() is None
    assert tasks.add.delay(2, 2).get(timeout=30) == 4
    stop(worker)


def test_gevent_hub_blocked_past_hard_limit_with_reject_on_worker_lost_goes_back(
        project: Project, tmp_path: Path) -> None:
    tasks = load(project, REJECT_ON_LOST)
    log = tmp_path / "runs.txt"
    worker = project.start_worker("-P", "gevent", "-c", "10", "--time-limit", "1")
    _, _, spinner = block_the_loop(project, tasks, worker, log)
    assert "reject_on_worker_lost: the message goes back to the queue" in worker.log()
    dead_spinner(project, tasks, spinner, log)
    stop(worker)


# -- 6. blocking detection --------------------------------------------------------------------
def heartbeat_stalls(project: Project) -> dict[str, int]:
    [info] = project.status()["workers"]
    stalls: dict[str, int] = info["stalls"]
    return stalls


def test_gevent_reports_a_blocking_task_with_its_stack(project: Project) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", "gevent", "-c", "10", "--max-blocking-time", "0.1")
    child = only_child(worker)
    # Cooperative tasks alone: no report.
    runs = [r.get(timeout=30) for r in [tasks.interval.delay(0.3) for _ in range(5)]]
    assert concurrent(runs)
    # One hog among sleepers: the hog, and only the hog, is named.
    sleepers = [tasks.interval.delay(1.0) for _ in range(3)]
    hog = tasks.hog.delay(0.5)
    assert hog.get(timeout=30) == 0.5
    for sleeper in sleepers:
        sleeper.get(timeout=30)
    ended = (rf"task tasks\.hog\[{hog.id}\] blocked the event loop of worker process {child} "
             r"for ([\d.]+)s")
    worker.wait_for_log(f"tasks.hog[{hog.id}] blocked the event loop")
    log_text = worker.log()
    assert f"task tasks.hog[{hog.id}] is blocking the event loop of worker process {child}" \
        in log_text, log_text
    # The stack ends at the task's own blocking line, in tasks.py.
    source = (project.path / "tasks.py").read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1) if "the blocking line" in text)
    assert f'tasks.py", line {line}, in hog' in log_text, log_text
    assert "while time.monotonic() < end: pass" in log_text
    # Timed from the switch before the 0.5 s loop to the switch after it.
    [seconds] = [float(s) for s in re.findall(ended, log_text)]
    assert 0.5 <= seconds < 0.8, seconds
    stalls = wait_until(lambda: heartbeat_stalls(project) or None, timeout=10,
                        message="stalls in the heartbeat")
    assert stalls == {"tasks.hog": 1}, stalls
    assert "tasks.interval[" not in "".join(
        line for line in log_text.splitlines() if "event loop" in line)
    stop(worker)


# -- 7. waiting for a result inside a green task -----------------------------------------------
def test_gevent_task_waits_for_another_tasks_result(project: Project) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", "gevent", "-c", "10")
    child = only_child(worker)
    parents = [tasks.parent.delay(i, i) for i in range(5)]
    assert [r.get(timeout=30) for r in parents] == [[2 * i, child] for i in range(5)]
    stop(worker)


# -- 8. eventlet ------------------------------------------------------------------------------
def test_eventlet_patching_and_time_limits(project: Project) -> None:
    tasks = load(project)
    worker = project.start_worker("-P", "eventlet", "-c", "10", "--time-limit", "1")
    child = only_child(worker)
    assert tasks.eventlet_patching.delay().get(timeout=30) == {
        "socket": True, "thread": True, "time": True}
    soft = tasks.busy_then_sleep.apply_async((0, 10), soft_time_limit=0.3)
    neighbours = [tasks.interval.apply_async((3.0,), time_limit=20) for _ in range(3)]
    stuck = tasks.sleep.delay(30)
    marker, elapsed, pid = soft.get(timeout=30)
    assert marker == "soft limit" and elapsed < 1.0 and pid == child
    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=30)
    runs = [r.get(timeout=30) for r in neighbours]
    assert {run[2] for run in runs} == {child} and concurrent(runs)
    assert worker.children() == [child], "the process was replaced"
    assert "killing" not in worker.log()
    assert TOO_LATE not in worker.log()
    assert "deprecated" not in worker.log(), worker.log()
    stop(worker)


def test_eventlet_hub_blocked_past_hard_limit_replaces_the_process(project: Project,
                                                                   tmp_path: Path) -> None:
    tasks = load(project, MAX_TWO)
    log = tmp_path / "runs.txt"
    worker = project.start_worker("-P", "eventlet", "-c", "10", "--time-limit", "1")
    _, _, spinner = block_the_loop(project, tasks, worker, log)
    failed_spinner(project, tasks, spinner, log)
    assert worker.proc.poll() is None
    assert tasks.add.delay(2, 2).get(timeout=30) == 4
    stop(worker)
