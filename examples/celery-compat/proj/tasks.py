"""Tasks written as for Celery: only the imports say ``celeriac``.

``shared_task`` binds each task to the current app, so this module never imports the app;
``-A proj`` imports it through the app's ``include=``.
"""

from __future__ import annotations

import datetime
import time
from decimal import Decimal
from typing import Any

from celeriac import Task, current_task, shared_task
from celeriac.exceptions import Ignore
from celeriac.utils.log import get_task_logger

logger = get_task_logger(__name__)


class AuditedTask(Task):
    """A custom base task: records each failure, as a Celery project's base class would."""

    failures: list[str] = []

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        logger.warning("task %s failed: %r", task_id, exc)
        type(self).failures.append(task_id)


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def invoice_total(lines: list[dict[str, Any]], due: datetime.date) -> dict[str, Any]:
    """Decimal and date arguments arrive as themselves (kombu's JSON type markers)."""
    total = sum((Decimal(line["price"]) * line["qty"] for line in lines), Decimal("0"))
    return {"total": total, "due": due, "overdue": due < datetime.date.today()}


@shared_task(bind=True)
def crunch(self: Task, steps: int, pause: float = 0.1) -> dict[str, int]:
    """Reports progress with ``update_state``; a client reads it from ``result.info``."""
    for done in range(steps):
        self.update_state(state="PROGRESS", meta={"done": done, "total": steps})
        logger.info("step %d of %d", done + 1, steps)
        time.sleep(pause)
    return {"done": steps, "total": steps}


class Unavailable(Exception):
    """A transient error worth retrying."""


@shared_task(bind=True, autoretry_for=(Unavailable,), retry_backoff=0.1,
             retry_backoff_max=1, retry_jitter=False, retry_kwargs={"max_retries": 4})
def fetch_rate(self: Task, fail_times: int) -> dict[str, int]:
    """Fails ``fail_times`` times, then succeeds: autoretry with backoff does the rest."""
    if self.request.retries < fail_times:
        raise Unavailable(f"attempt {self.request.retries} failed")
    return {"retries": self.request.retries}


@shared_task(base=AuditedTask, bind=True)
def charge(self: Task, amount: int) -> int:
    """Fails on a negative amount: ``AuditedTask.on_failure`` runs in the worker."""
    if amount < 0:
        raise ValueError(f"cannot charge {amount}")
    return amount


@shared_task
def report(day: str) -> str:
    """Routed to the ``reports`` queue by ``task_routes``: ``current_task`` says so."""
    return f"report for {day} from {current_task.request.delivery_info['routing_key']}"


@shared_task(bind=True)
def maybe_skip(self: Task, skip: bool) -> str:
    """``Ignore`` ends the task without a result, as in Celery."""
    if skip:
        raise Ignore()
    return "ran"
