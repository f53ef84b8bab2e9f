"""Loggers for tasks, as Celery's ``celery.utils.log`` gives them.

``logger = get_task_logger(__name__)`` at the top of a tasks module gives the
module's own logger (``logging.getLogger(__name__)``, the same object) with the
task logger, ``celeriac.task``, made its parent. In a worker that logger has its
own handler whose :class:`TaskFormatter` fills ``%(task_name)s`` and
``%(task_id)s`` from the task running when the record is formatted, so a line
says which task logged it (``worker_task_log_format``); other records use
``worker_log_format`` (see :mod:`celeriac.worker.logs`).

The task is looked up in the request context (:mod:`celeriac.context`), which is
right per thread and per greenlet, so tasks running side by side in one process
each get their own name and id. Outside a task both fields are ``???``.

One difference from Celery: these functions add no ``NullHandler``, so in a
process that never configured logging a task logger's warnings still reach
Python's last-resort handler (stderr) instead of vanishing.
"""

from __future__ import annotations

import logging

from celeriac.context import current_request

__all__ = ["TASK_LOGGER", "TaskFormatter", "base_logger", "get_logger", "get_task_logger",
           "task_logger"]

#: The logger of celeriac's own modules; a logger :func:`get_logger` hands out hangs
#: under it unless it already hangs under the root logger directly.
BASE_LOGGER = "celeriac"
#: The parent of task loggers; the worker gives it a handler with :class:`TaskFormatter`.
TASK_LOGGER = "celeriac.task"
#: Names that would make the task logger its own child.
RESERVED = frozenset({BASE_LOGGER, TASK_LOGGER})

base_logger = logging.getLogger(BASE_LOGGER)
task_logger = logging.getLogger(TASK_LOGGER)


def _descends_from(logger: logging.Logger, ancestor: logging.Logger) -> bool:
    node: logging.Logger | None = logger
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _under(parent: logging.Logger, logger: logging.Logger) -> logging.Logger:
    """``logger``, made a child of ``parent`` unless it already descends from it."""
    if not _descends_from(logger, parent):
        logger.parent = parent
    return logger


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, as Celery's ``get_logger`` gives it: a logger whose
    parent is some other logger than the root (``proj.sub`` while ``proj`` exists) is
    moved under celeriac's own logger; one straight under the root stays there."""
    logger = logging.getLogger(name)
    if logging.root not in (logger, logger.parent) and logger is not base_logger:
        _under(base_logger, logger)
    return logger


def get_task_logger(name: str) -> logging.Logger:
    """The logger ``name`` with the task logger (``celeriac.task``) as its parent, so that
    in a worker its records carry the running task's name and id and use
    ``worker_task_log_format``. ``celeriac`` and ``celeriac.task`` themselves are refused
    (RuntimeError, as Celery refuses its own two names)."""
    if name in RESERVED:
        raise RuntimeError(f"Logger name {name!r} is reserved!")
    return _under(task_logger, get_logger(name))


class TaskFormatter(logging.Formatter):
    """A formatter for task loggers: ``%(task_name)s`` and ``%(task_id)s`` are the task
    running in this thread or greenlet when the record is formatted, ``???`` outside a
    task (where a record's own ``task_name``/``task_id``, given with ``extra=``, is kept).

    Public as in Celery (``celery.app.log.TaskFormatter``): an ``after_setup_task_logger``
    receiver may set it on its own handlers with its own format.
    """

    def format(self, record: logging.LogRecord) -> str:
        request = current_request.get()
        if request is not None:
            record.task_name, record.task_id = request.task, request.id
        else:
            record.__dict__.setdefault("task_name", "???")
            record.__dict__.setdefault("task_id", "???")
        return super().format(record)
