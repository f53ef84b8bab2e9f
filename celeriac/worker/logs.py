"""Logging set-up for ``celeriac worker``: the supervisor and each worker process.

Both configure logging the same way, with Celery's signals around it:

* ``setup_logging`` is sent first; if any receiver answers, celeriac leaves
  logging alone (the receivers configured it) and sends nothing else -- unless
  every receiver raised, when celeriac configures logging after all, so that no
  log line is lost to a broken receiver;
* otherwise the root logger gets a handler at the ``-l`` level -- stderr, or the
  ``--logfile`` (a ``WatchedFileHandler``, so logrotate may move the file away:
  the next line reopens it), then
  ``after_setup_logger`` is sent with the root logger, and
  ``after_setup_task_logger`` with :data:`TASK_LOGGER`, the parent of task loggers
  (``logging.getLogger("celeriac.task.<name>")``), for receivers that add
  handlers or filters (a Sentry or JSON handler, a task-id filter).

A worker process sets up logging after it imported the app, so receivers the app
module connects are there in time; what the import itself logs goes to Python's
last-resort handler (warnings and errors on stderr).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

from celeriac import signals
from celeriac.exceptions import ConfigurationError
from celeriac.worker.nodenames import node_format

#: The logger task loggers hang under; ``after_setup_task_logger`` gets it.
TASK_LOGGER = "celeriac.task"


def log_format(process: str) -> str:
    """The format of celeriac's log lines, naming the process (``supervisor``,
    ``node/0``); a ``%`` in a node name is kept as it is."""
    return f"[%(asctime)s %(levelname)s {process.replace('%', '%%')}] %(message)s"


def setup_logging(loglevel: str, format: str, *, logfile: str | None = None,
                  colorize: bool = False) -> bool:
    """Configure logging unless a ``setup_logging`` receiver does; True if one did.

    The signals get Celery's arguments: ``loglevel`` as a number (``logging.INFO``),
    ``logfile`` (the ``--logfile`` path, expanded for this process; None for stderr),
    ``format`` and ``colorize`` (always False).
    """
    level = logging.getLevelName(loglevel.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {loglevel!r}")
    arguments = {"loglevel": level, "logfile": logfile, "format": format, "colorize": colorize}
    responses = signals.setup_logging.send(sender=None, **arguments)
    if any(not isinstance(response, Exception) for _, response in responses):
        return True
    handler: logging.Handler
    if logfile:
        try:
            handler = logging.handlers.WatchedFileHandler(logfile, encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot open log file {logfile}: {exc.strerror}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=level, format=format, handlers=[handler])
    if responses:  # every receiver raised (and was logged): log lines must not be lost
        logging.getLogger("celeriac.signals").warning(
            "every setup_logging receiver raised; celeriac configured logging itself")
    signals.after_setup_logger.send(sender=None, logger=logging.getLogger(), **arguments)
    task_logger = logging.getLogger(TASK_LOGGER)
    task_logger.setLevel(level)
    signals.after_setup_task_logger.send(sender=None, logger=task_logger, **arguments)
    return False


def process_logfile(template: str | None, node: str, index: int | None) -> str | None:
    """The ``--logfile`` of one process of ``node`` (``index`` None: the supervisor), its
    abbreviations expanded; None when logging to stderr."""
    return node_format(template, node, index) if template else None
