"""``examples/celery-compat``: a Celery tutorial project run by the real celeriac CLI.

The example is copied to a temporary directory and run as its README says: a worker started
with the flags of a Celery deploy file, then ``python demo.py`` as a client in another
process. Both configurations are run: ``-A proj`` (``celeryconfig.py`` through
``config_from_object``) with the threads pool, and ``-A proj.djangostyle`` (the ``CELERY_``
namespace) with gevent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, Worker, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "celery-compat"


@pytest.fixture
def compat(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    # The example reads its broker from PROJ_BROKER_URL, as a deploy would from its own
    # variable (CELERIAC_BROKER_URL would lose to the config object). Set here, every
    # process of the test (workers, demo.py, ``celeriac status``) gets it.
    monkeypatch.setenv("PROJ_BROKER_URL", project.broker_url)
    for item in EXAMPLE.iterdir():
        if item.name in ("__pycache__", "proj.db"):
            continue
        if item.is_dir():
            shutil.copytree(item, project.path / item.name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(item, project.path / item.name)
    return project


def start(project: Project, app: str, *args: str) -> Worker:
    log_path = project.path / f"worker-{len(project.workers)}.log"
    argv = [sys.executable, "-m", "celeriac", "-A", app, "worker", "-l", "INFO",
            "-Q", "celery,reports", "-O", "fair", "--without-gossip", "--without-mingle",
            "-n", f"compat{len(project.workers)}@%h", *args]
    proc = subprocess.Popen(argv, cwd=project.path, env=project.env, text=True,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    worker = Worker(proc, log_path, argv)
    project.workers.append(worker)
    project.wait_ready(worker)
    return worker


def run_demo(project: Project) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "demo.py", "30"], cwd=project.path,
                          env={**project.env, "PYTHONPATH": str(project.path)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize(("app", "pool"), [("proj", "threads"), ("proj.djangostyle", "gevent")])
def test_celery_tutorial_project_runs_unchanged(compat: Project, app: str, pool: str) -> None:
    worker = start(compat, app, "-P", pool, "-c", "4", "-E")
    out = run_demo(compat)

    assert out["add"] == 5
    # Decimal and date went out as kombu's markers and came back as themselves.
    assert out["invoice"] == {"total": "29.97", "total_type": "Decimal",
                              "due": "2030-01-31", "due_type": "date"}
    # update_state: the client saw PROGRESS with its meta before the result.
    assert out["progress_seen"], out
    assert out["progress_seen"] == sorted(out["progress_seen"])
    assert set(out["progress_seen"]) <= set(range(5))
    assert out["crunch"] == {"done": 5, "total": 5}
    # autoretry_for with backoff: two failures, then success on the third run.
    assert out["fetch_rate"] == {"retries": 2}
    assert out["charge"]["state"] == "FAILURE"
    assert out["charge"]["message"] == "cannot charge -5"
    assert out["report"] == "report for 2030-01-31 from reports"
    assert out["skip_ran"] == "ran"

    log = worker.log()
    # The custom base's on_failure ran in the worker, through a get_task_logger logger.
    assert "failed: ValueError('cannot charge -5')" in log
    # get_task_logger's lines carry the task's name and id (Celery's task log format).
    assert "proj.tasks.crunch[" in log and "step 5 of 5" in log
    # The routed task ran from the reports queue; the ignored one was acked, not dead-lettered.
    wait_until(lambda: all(compat.queue(q, app=app) == {"ready": 0, "scheduled": 0,
                                                         "in_flight": 0, "dead": 0}
                           for q in ("celery", "reports")), timeout=30)
    assert worker.stop() == 0
