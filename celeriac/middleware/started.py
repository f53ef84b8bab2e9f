"""``track_started``: store a STARTED state when a task begins (off by default, as in Celery)."""

from __future__ import annotations

import logging
import os
import socket

from celeriac.backends.base import ResultRecord
from celeriac.exceptions import BackendError
from celeriac.middleware.base import Middleware, TaskRun
from celeriac.states import STARTED

log = logging.getLogger("celeriac.worker")


class TrackStarted(Middleware):
    """Stores STARTED (with the worker's pid and host, as Celery does) for tasks that ask."""

    def before_task(self, run: TaskRun) -> None:
        if run.ignore_result or not run.task.track_started:
            return
        request = run.request
        record = ResultRecord(task_id=request.id, status=STARTED, name=run.task.name,
                              retries=request.retries,
                              result={"pid": os.getpid(), "hostname": socket.gethostname()})
        try:
            run.task.app.backend.store(record)
        except BackendError as exc:
            log.error("could not store the STARTED state of %s: %s", request.id, exc)
