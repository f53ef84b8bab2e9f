"""Expiry: a message past its ``expires`` is not run; its result is REVOKED ("expired")."""

from __future__ import annotations

import logging
import time

from celeriac.backends.base import ResultRecord
from celeriac.middleware.base import Middleware, TaskRun

log = logging.getLogger("celeriac.worker")


class Expiry(Middleware):
    """Stops a task whose message expired before it could start."""

    def check_run(self, run: TaskRun) -> ResultRecord | None:
        expires = run.request.expires
        if expires is None or time.time() <= expires:
            return None
        # Imported here, past the check every task makes (worker.run imports this package).
        from celeriac.worker.run import revoked_record

        log.info("task %s[%s] expired; not running it", run.name, run.request.id)
        run.revoked = "expired"
        return revoked_record(run.request.id, run.task.name, "expired", run.request.retries)
