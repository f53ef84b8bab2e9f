"""Task logging in a real worker, as a Celery project has it: a tasks module's
``get_task_logger(__name__)`` lines carry the task's name and id in the worker's log, in
``worker_task_log_format``; the worker's own lines use ``worker_log_format``; both are
Celery's by default and may be set in a config object (``tests/test_logging.py`` has the
parts in-process)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from conftest import Project, wait_until

#: A tasks module logging as Celery's docs show it.
LOGGING_TASKS = '''
from celeriac.utils.log import get_task_logger

logger = get_task_logger(__name__)

@app.task
def hello(who):
    logger.info("hello %s", who)
    return who
'''

#: Celery's default line: ``[2026-01-31 12:00:00,123: INFO/<process>] <message>``.
LINE = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: INFO/%s\] %s"


def test_a_task_loggers_lines_carry_the_task_in_celerys_format(project: Project) -> None:
    project.write_tasks(LOGGING_TASKS)
    logs = project.path / "logs"
    logs.mkdir()
    worker = project.start_worker("-P", "threads", "-c", "2", "-n", "logs@%h",
                                  "--logfile", f"{logs}/%n%I.log", ready=False)
    node, supervisor_log = f"logs@{socket.gethostname()}", logs / "logs.log"
    wait_until(lambda: "all worker processes ready" in read(supervisor_log), timeout=30,
               message="ready in the --logfile")
    result = project.app().tasks["tasks.hello"].delay("world")
    assert result.get(timeout=30) == "world"
    worker_log = logs / "logs-1.log"
    expected = LINE % ("Worker-0", re.escape(f"tasks.hello[{result.id}]: hello world"))
    wait_until(lambda: re.search(f"^{expected}$", read(worker_log), re.M), timeout=10,
               message="the task's line in the worker process's --logfile")
    assert read(worker_log).count("hello world") == 1  # once: the task logger does not propagate
    ready = LINE % ("MainProcess", re.escape(f"{node}: all worker processes ready"))
    assert re.search(f"^{ready}$", read(supervisor_log), re.M), read(supervisor_log)
    assert worker.stop() == 0
    assert f"{node}: stopped" in read(supervisor_log)


def test_formats_set_in_a_config_object_are_used(project: Project) -> None:
    (project.path / "celeryconfig.py").write_text(
        'worker_log_format = "WORKER %(processName)s %(levelname)s: %(message)s"\n'
        'worker_task_log_format = "TASK %(task_name)s %(task_id)s %(processName)s: %(message)s"\n')
    project.write_tasks('app.config_from_object("celeryconfig")\n' + LOGGING_TASKS)
    worker = project.start_worker("-P", "prefork", "-c", "1")
    result = project.app().tasks["tasks.hello"].delay("config")
    assert result.get(timeout=30) == "config"
    wait_until(lambda: "hello config" in worker.log(), timeout=10, message="the task's line")
    lines = worker.log().splitlines()
    assert f"TASK tasks.hello {result.id} Worker-0: hello config" in lines, lines
    assert any(re.fullmatch(r"WORKER MainProcess INFO: \S+: all worker processes ready", line)
               for line in lines), lines
    assert [line for line in lines if "hello config" in line] == [
        f"TASK tasks.hello {result.id} Worker-0: hello config"]
    assert worker.stop() == 0


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
