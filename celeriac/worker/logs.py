"""Logging set-up for ``celeriac worker``: the supervisor and each worker process.

Both configure logging the same way, with Celery's signals around it:

* ``setup_logging`` is sent first; if any receiver answers, celeriac leaves
  logging alone (the receivers configured it) and sends nothing else -- unless
  every receiver raised, when celeriac configures logging after all, so that no
  log line is lost to a broken receiver;
* otherwise, as Celery does, the root logger gets a handler at the ``-l`` level
  with ``worker_log_format`` -- stderr, or the ``--logfile`` (a
  ``WatchedFileHandler``, so logrotate may move the file away: the next line
  reopens it) -- and ``after_setup_logger`` is sent with the root logger; then the
  task logger :data:`TASK_LOGGER`, the parent of every
  :func:`~celeriac.utils.log.get_task_logger` logger, gets a handler of its own to
  the same place with ``worker_task_log_format`` and a
  :class:`~celeriac.utils.log.TaskFormatter`, and stops propagating (its records
  are written once, in the task format), and ``after_setup_task_logger`` is sent
  with it, for receivers that add handlers, filters or formatters;
* ``worker_hijack_root_logger`` (default True) first removes the handlers the root,
  ``celeriac`` and task loggers already had (a ``logging.basicConfig`` in the app
  module); False keeps them, and a logger that already has a handler gets none.

A worker process sets up logging after it imported the app, so receivers the app
module connects are there in time; what the import itself logs goes to Python's
last-resort handler (warnings and errors on stderr). ``%(processName)s`` is
``MainProcess`` in the supervisor, as in Celery's main process, and ``Worker-N``
in worker process N (the index the supervisor's own lines use).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from dataclasses import dataclass
from typing import Any

from celeriac import signals
from celeriac.exceptions import ConfigurationError
from celeriac.settings import SETTINGS, Settings
from celeriac.utils.log import BASE_LOGGER, TASK_LOGGER, TaskFormatter
from celeriac.worker.nodenames import node_format

__all__ = ["TASK_LOGGER", "LogSetup", "configure_logging", "name_process", "process_logfile",
           "setup_logging"]


@dataclass(frozen=True)
class LogSetup:
    """How one process logs: the ``-l`` level, the ``--logfile`` (None: stderr) and the
    app's logging settings."""

    loglevel: int
    logfile: str | None = None
    format: str = SETTINGS["worker_log_format"].default
    task_format: str = SETTINGS["worker_task_log_format"].default
    datefmt: str | None = None
    task_datefmt: str | None = None
    hijack_root_logger: bool = True

    @classmethod
    def from_conf(cls, conf: Settings, loglevel: str, logfile: str | None) -> LogSetup:
        """The set-up the app's settings ask for, at level ``loglevel`` (a name, any case)."""
        return cls(level_number(loglevel), logfile, conf.worker_log_format,
                   conf.worker_task_log_format, conf.worker_log_datefmt,
                   conf.worker_task_log_datefmt, conf.worker_hijack_root_logger)

    def signal_arguments(self, format: str) -> dict[str, Any]:
        """Celery's arguments of the logging signals: ``colorize`` is always False."""
        return {"loglevel": self.loglevel, "logfile": self.logfile, "format": format,
                "colorize": False}


def level_number(loglevel: str) -> int:
    """``logging.INFO`` for ``"info"``; ValueError for a name logging does not know."""
    level = logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {loglevel!r}")
    return level


def configure_logging(conf: Settings, loglevel: str, logfile: str | None) -> bool:
    """:func:`setup_logging` with the app's settings (``conf``); True if a
    ``setup_logging`` receiver configured logging instead."""
    return setup_logging(LogSetup.from_conf(conf, loglevel, logfile))


def setup_logging(setup: LogSetup) -> bool:
    """Configure logging unless a ``setup_logging`` receiver does; True if one did."""
    responses = signals.setup_logging.send(sender=None, **setup.signal_arguments(setup.format))
    if any(not isinstance(response, Exception) for _, response in responses):
        return True
    root, task_logger = logging.getLogger(), logging.getLogger(TASK_LOGGER)
    if setup.hijack_root_logger:
        for logger in (root, logging.getLogger(BASE_LOGGER), task_logger):
            logger.handlers = []
    _give_handler(root, setup, logging.Formatter(setup.format, setup.datefmt))
    root.setLevel(setup.loglevel)
    if responses:  # every receiver raised (and was logged): log lines must not be lost
        logging.getLogger("celeriac.signals").warning(
            "every setup_logging receiver raised; celeriac configured logging itself")
    signals.after_setup_logger.send(sender=None, logger=root,
                                    **setup.signal_arguments(setup.format))
    _give_handler(task_logger, setup, TaskFormatter(setup.task_format, setup.task_datefmt))
    task_logger.setLevel(setup.loglevel)
    task_logger.propagate = False
    signals.after_setup_task_logger.send(sender=None, logger=task_logger,
                                         **setup.signal_arguments(setup.task_format))
    return False


def _give_handler(logger: logging.Logger, setup: LogSetup, formatter: logging.Formatter) -> None:
    """A handler to stderr or the log file for ``logger``, unless it has one already
    (one the app configured, kept with ``worker_hijack_root_logger=False``)."""
    if any(not isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        return
    handler: logging.Handler
    if setup.logfile:
        try:
            handler = logging.handlers.WatchedFileHandler(setup.logfile, encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"cannot open log file {setup.logfile}: {exc.strerror}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    logger.addHandler(handler)


def name_process(index: int) -> None:
    """Call worker process ``index`` ``Worker-<index>`` in ``%(processName)s`` (logging reads
    the name from :mod:`multiprocessing`; every worker process would be ``MainProcess``)."""
    import multiprocessing

    multiprocessing.current_process().name = f"Worker-{index}"


def process_logfile(template: str | None, node: str, index: int | None) -> str | None:
    """The ``--logfile`` of one process of ``node`` (``index`` None: the supervisor), its
    abbreviations expanded; None when logging to stderr."""
    return node_format(template, node, index) if template else None
