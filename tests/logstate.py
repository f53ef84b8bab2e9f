"""Tests that set up a worker's logging in the test process put logging back afterwards."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager

from celeriac.utils.log import BASE_LOGGER, TASK_LOGGER


@contextmanager
def bare_logging() -> Iterator[logging.Logger]:
    """The root, ``celeriac`` and task loggers without handlers, as in a fresh process;
    their handlers (pytest's own), levels and propagation, and this process's name, are put
    back afterwards (within the test: pytest swaps its handlers per phase). Handlers a test
    added are closed (a log file they opened)."""
    loggers = [logging.getLogger(), logging.getLogger(BASE_LOGGER), logging.getLogger(TASK_LOGGER)]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    name = multiprocessing.current_process().name
    loggers[0].handlers = []
    loggers[0].setLevel(logging.NOTSET)
    try:
        yield loggers[0]
    finally:
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        multiprocessing.current_process().name = name
