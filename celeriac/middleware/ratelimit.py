"""Rate limits: accepted, checked, not enforced yet.

Celery's ``rate_limit`` task option and ``task_default_rate_limit`` setting are
accepted (a Celery app must load unchanged) and validated when declared, but
celeriac's worker does not throttle tasks yet: that comes with the workflows
work. Running a rate-limited task at full speed without a word could overload
whatever the limit protected, so the supervisor says so once per task when the
node starts (``worker_disable_rate_limits`` silences it, as it would have turned
the limits off in Celery).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celeriac.middleware.base import Middleware

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.worker.supervisor import Supervisor

log = logging.getLogger("celeriac.worker")


def unenforced(app: Celeriac) -> dict[str, str | float]:
    """The tasks of ``app`` that have a rate limit, and their limit."""
    if app.conf.worker_disable_rate_limits:
        return {}
    limits: dict[str, str | float] = {}
    for name, task in sorted(app.tasks.items()):
        limit = task.rate_limit
        if limit and not name.startswith("celery."):  # the built-in map tasks
            limits[name] = limit
    return limits


class RateLimitNotice(Middleware):
    """Logs, when the node starts, each task whose rate limit will not be enforced."""

    def node_starting(self, supervisor: Supervisor) -> None:
        for name, limit in unenforced(supervisor.app).items():
            log.warning("task %s: rate_limit=%r is NOT enforced: celeriac does not throttle "
                        "tasks yet, they run as fast as they are delivered (see "
                        "docs/migrating.md)", name, limit)
