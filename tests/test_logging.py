"""Task logging as Celery users have it: ``get_task_logger``, the task formatter, and the
worker's logging settings (``worker_log_format``, ``worker_task_log_format``, their date
formats, ``worker_hijack_root_logger``), in the test process. The same in a real worker
subprocess is in ``tests/e2e/test_task_logging.py``; the logging signals are in
``tests/test_signals.py``.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from logstate import bare_logging

from celeriac import Celeriac
from celeriac.exceptions import ConfigurationError
from celeriac.settings import Settings
from celeriac.utils.log import TASK_LOGGER, TaskFormatter, get_logger, get_task_logger
from celeriac.worker.logs import LogSetup, name_process, setup_logging

#: Celery 5's defaults (celery/app/defaults.py), which celeriac's must equal.
CELERY_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
CELERY_TASK_FORMAT = ("[%(asctime)s: %(levelname)s/%(processName)s] "
                      "%(task_name)s[%(task_id)s]: %(message)s")


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("t", broker="memory://", backend="memory://")


@pytest.fixture
def fresh_logging() -> Iterator[None]:
    """Logging set up from scratch in the test, and put back afterwards (the worker's
    stderr handler writes to pytest's ``capsys`` capture, which a test reads)."""
    with bare_logging():
        yield


# -- loggers -------------------------------------------------------------------------------------


def test_a_task_logger_is_the_modules_logger_under_the_task_logger() -> None:
    logger = get_task_logger("proj.tasks_under_test")
    assert logger is logging.getLogger("proj.tasks_under_test")
    assert logger.parent is logging.getLogger(TASK_LOGGER)
    assert get_task_logger("proj.tasks_under_test") is logger  # asking again changes nothing
    assert logger.parent is logging.getLogger(TASK_LOGGER)
    for reserved in ("celeriac", "celeriac.task"):
        with pytest.raises(RuntimeError, match="reserved"):
            get_task_logger(reserved)


def test_get_logger_moves_a_nested_logger_under_celeriacs_own_as_celery_does() -> None:
    top = get_logger("top_level_under_test")
    assert top.parent is logging.getLogger()  # straight under the root: left there
    logging.getLogger("pkg_under_test")
    nested = get_logger("pkg_under_test.mod")
    assert nested.parent is logging.getLogger("celeriac")
    assert get_logger("celeriac.worker").parent is logging.getLogger("celeriac")


# -- the task formatter --------------------------------------------------------------------------


def records_of(logger_name: str, formatter: logging.Formatter) -> tuple[logging.Handler, list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(formatter)
    logging.getLogger(logger_name).addHandler(handler)
    return handler, lines


def test_the_task_formatter_names_the_running_task_and_says_unknown_outside(app: Celeriac) -> None:
    logger = get_task_logger("proj.formatted")

    @app.task(name="proj.hello")
    def hello(who: str) -> str:
        logger.warning("hello %s", who)
        return who

    handler, lines = records_of(TASK_LOGGER, TaskFormatter("%(task_name)s[%(task_id)s]: %(message)s"))
    try:
        result = hello.apply(("world",))
        logger.warning("outside")
        logger.warning("given", extra={"task_name": "mine", "task_id": "42"})
    finally:
        logging.getLogger(TASK_LOGGER).removeHandler(handler)
    assert lines == [f"proj.hello[{result.id}]: hello world", "???[???]: outside",
                     "mine[42]: given"]


def test_tasks_side_by_side_in_threads_each_get_their_own_name_and_id(app: Celeriac) -> None:
    logger = get_task_logger("proj.threaded")
    both_running = threading.Barrier(2, timeout=10)

    @app.task(name="proj.side")
    def side(n: int) -> int:
        both_running.wait()  # the two requests are current at once
        logger.warning("task %d", n)
        return n

    handler, lines = records_of(TASK_LOGGER, TaskFormatter("%(task_id)s %(message)s"))
    ids: dict[int, str] = {}
    try:
        threads = [threading.Thread(target=lambda n=n: ids.__setitem__(n, side.apply((n,)).id))
                   for n in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        logging.getLogger(TASK_LOGGER).removeHandler(handler)
    assert sorted(lines) == sorted([f"{ids[1]} task 1", f"{ids[2]} task 2"])


# -- the worker's set-up -------------------------------------------------------------------------


def test_the_settings_default_to_celerys_and_are_checked() -> None:
    conf = Settings({})
    assert (conf.worker_log_format, conf.worker_task_log_format) == (CELERY_FORMAT,
                                                                     CELERY_TASK_FORMAT)
    assert (conf.worker_log_datefmt, conf.worker_task_log_datefmt) == (None, None)
    assert conf.worker_hijack_root_logger is True
    with pytest.raises(ConfigurationError, match="worker_task_log_format='no fields'"):
        conf.worker_task_log_format = "no fields"
    with pytest.deprecated_call():
        conf.update(CELERYD_TASK_LOG_FORMAT="%(task_id)s %(message)s", worker_log_color=False)
    assert conf.worker_task_log_format == "%(task_id)s %(message)s"


def test_task_records_use_the_task_format_and_others_the_worker_format(
        app: Celeriac, fresh_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    app.conf.update(worker_log_format="W %(processName)s %(name)s: %(message)s",
                    worker_task_log_format="T %(task_name)s[%(task_id)s] %(name)s: %(message)s")
    name_process(3)
    assert setup_logging(LogSetup.from_conf(app.conf, "info", None)) is False
    logger = get_task_logger("proj.mixed")

    @app.task(name="proj.mixed")
    def mixed() -> None:
        logger.info("from the task")
        logging.getLogger("proj.other").info("another logger, in the task")

    result = mixed.apply()
    logging.getLogger("celeriac.worker").debug("below the level")
    assert capsys.readouterr().err.splitlines() == [
        f"T proj.mixed[{result.id}] proj.mixed: from the task",  # written once: no propagation
        "W Worker-3 proj.other: another logger, in the task",
    ]
    assert multiprocessing.current_process().name == "Worker-3"


def test_both_formats_go_to_the_logfile_with_their_date_formats(app: Celeriac, tmp_path: Path) -> None:
    app.conf.update(worker_log_datefmt="%Y", worker_task_log_datefmt="day %d",
                    worker_log_format="%(asctime)s %(message)s",
                    worker_task_log_format="%(asctime)s %(task_name)s %(message)s")
    logfile = tmp_path / "worker.log"
    with bare_logging():
        setup_logging(LogSetup.from_conf(app.conf, "INFO", str(logfile)))
        logging.getLogger("celeriac.worker").info("worker line")
        get_task_logger("proj.file").info("task line")
    lines = logfile.read_text().splitlines()
    assert re.fullmatch(r"\d{4} worker line", lines[0]), lines
    assert re.fullmatch(r"day \d\d \?\?\? task line", lines[1]), lines


def test_the_worker_hijacks_the_root_logger_unless_told_not_to(
        app: Celeriac, fresh_logging: None) -> None:
    apps_own = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(apps_own)  # a logging.basicConfig in the app module
    setup_logging(LogSetup.from_conf(app.conf, "INFO", None))
    assert apps_own not in logging.getLogger().handlers
    assert len(logging.getLogger().handlers) == 1

    logging.getLogger().handlers = [apps_own]
    logging.getLogger(TASK_LOGGER).handlers = []
    app.conf.worker_hijack_root_logger = False
    setup_logging(LogSetup.from_conf(app.conf, "WARNING", None))
    assert logging.getLogger().handlers == [apps_own]  # kept, and no second one added
    assert logging.getLogger().level == logging.WARNING
    [task_handler] = logging.getLogger(TASK_LOGGER).handlers  # none there: the worker's
    assert isinstance(task_handler.formatter, TaskFormatter)
    logging.getLogger("proj").warning("to the app's handler")
    assert apps_own.stream.getvalue() == "to the app's handler\n"
