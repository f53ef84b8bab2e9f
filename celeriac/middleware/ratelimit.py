"""What a node says, when it starts, about the limits of its tasks.

Rate and concurrency limits are enforced in the worker processes
(:mod:`celeriac.middleware.limits`). A limit is cluster-wide, which a Celery user
does not expect (Celery's is per worker process), so the node lists the limits
in force once at start; with ``worker_disable_rate_limits`` it warns instead that
this node runs rate-limited tasks without their limit, since other nodes still
keep it and the operator may not have meant to break it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celeriac.middleware.base import Middleware

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.worker.supervisor import Supervisor

log = logging.getLogger("celeriac.worker")


def declared(app: Celeriac) -> dict[str, str | float]:
    """The tasks of ``app`` that have a rate limit (their own or the default), and it."""
    limits: dict[str, str | float] = {}
    for name, task in sorted(app.tasks.items()):
        limit = task.rate_limit
        # Not the built-ins: the map tasks, and celeriac.replace_failed (an errback called
        # in the worker process, never sent, so never limited).
        if limit and not name.startswith(("celery.", "celeriac.")):
            limits[name] = limit
    return limits


class RateLimitNotice(Middleware):
    """Logs, when the node starts, each task's cluster-wide limits."""

    def node_starting(self, supervisor: Supervisor) -> None:
        app = supervisor.app
        disabled = bool(app.conf.worker_disable_rate_limits)
        for name, limit in declared(app).items():
            if disabled:
                log.warning("task %s: rate_limit=%r is NOT enforced on this node "
                            "(worker_disable_rate_limits); other nodes keep it", name, limit)
            else:
                log.info("task %s: at most %s across every worker of the broker", name, limit)
        for name, task in sorted(app.tasks.items()):
            if task.concurrency_limit is not None:
                log.info("task %s: at most %d running at once across every worker of the "
                         "broker", name, task.concurrency_limit)
