"""The hook pipeline and the concerns that hang on it, one module each.

:mod:`celeriac.middleware.base` defines :class:`Middleware` (typed, no-op hooks)
and :class:`Pipeline` (calls them in order, ``after_*`` in reverse, each failure
isolated). The pipelines a process builds:

* the producer's (``app.middleware``): signals around publishing;
* an eager run's (``Task.apply``): signals, task class handlers, autoretry, follow-ups;
* a worker process's (:func:`worker_pipeline`): status reporting, metric rollups
  (:mod:`.metrics`, unless ``worker_send_metrics`` is off), expiry, revocation, signals,
  ``track_started``, task class handlers, autoretry, result storage and recycling, in
  that order, then cluster-wide rate and concurrency limits (:mod:`.limits`); with
  ``-E``, task events (:mod:`.events`); in a Django project,
  closing stale database connections around each task (:mod:`.django`); last,
  callbacks, errbacks and chains (:mod:`.followups`).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from celeriac.middleware.autoretry import Autoretry
from celeriac.middleware.base import (
    ACK,
    DEAD,
    DEFER,
    REQUEUE,
    RETRY_LATER,
    SETTLED,
    Finished,
    Middleware,
    Outcome,
    Pipeline,
    Rejection,
    TaskRun,
)
from celeriac.middleware.expiry import Expiry
from celeriac.middleware.followups import Followups
from celeriac.middleware.handlers import TaskHandlers
from celeriac.middleware.signals import SignalsMiddleware
from celeriac.middleware.started import TrackStarted

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.middleware.recycle import Recyclable
    from celeriac.pools.base import Pool
    from celeriac.worker.status import StatusWriter


def producer_pipeline(app: Celeriac) -> Pipeline:
    """What runs around publishing in any process that sends tasks: signals, and
    ``task-sent`` events when ``task_send_sent_event`` is on."""
    pipeline = Pipeline([SignalsMiddleware()])
    if app.conf.task_send_sent_event:
        from celeriac.middleware.events import SentEvents

        pipeline.add(SentEvents())
    return pipeline


@cache
def eager_pipeline() -> Pipeline:
    """What runs around a task run in the calling process (``apply``, eager mode)."""
    return Pipeline([SignalsMiddleware(), TaskHandlers(), Autoretry(), Followups()])


def worker_pipeline(app: Celeriac, pool: Pool, status: StatusWriter, consumer: Recyclable,
                    max_tasks: int | None, max_memory_kb: int | None) -> Pipeline:
    """The pipeline of one worker process, in order (``after_*`` hooks run in reverse)."""
    from celeriac.middleware.recycle import Recycler
    from celeriac.middleware.results import ResultStore
    from celeriac.middleware.revoke import Revoker
    from celeriac.middleware.status import StatusReporter

    pipeline = Pipeline([
        StatusReporter(status, pool),
        Expiry(),
        Revoker(app.broker, pool, status),
        SignalsMiddleware(consumer),
        TrackStarted(),
        TaskHandlers(),
        Autoretry(),
        ResultStore(app.backend),
        Recycler(consumer, max_tasks, max_memory_kb),
    ])
    from celeriac.middleware.limits import Limits

    pipeline.add(Limits(app, app.broker, float(app.conf.broker_lease_timeout)))
    if app.conf.worker_send_metrics:
        from celeriac.middleware.metrics import TaskMetrics

        # Second: its after_task runs next to last, when every other hook has settled
        # how the run ended (Followups may turn it into a failure).
        pipeline.add(TaskMetrics(app.broker), before=Expiry)
    if app.conf.worker_send_task_events:
        from celeriac.middleware.events import worker_task_events

        pipeline.add(worker_task_events(app, consumer, pool))
    from celeriac.contrib.django.fixup import applies as django_applies

    if django_applies(app):
        from celeriac.middleware.django import DjangoConnections

        pipeline.add(DjangoConnections())
    from celeriac.middleware.chords import Chords

    # After ResultStore: a chord member joins once its result is stored, before its ack;
    # before Followups, so its after_task sees the outcome Followups may have changed.
    pipeline.add(Chords(app))
    # Last, so its after_task runs first: callbacks go out before on_success and the
    # signals, and a follow-up that cannot be sent turns the run into the FAILURE they see.
    pipeline.add(Followups())
    return pipeline


__all__ = [
    "ACK",
    "DEAD",
    "DEFER",
    "REQUEUE",
    "RETRY_LATER",
    "SETTLED",
    "Finished",
    "Middleware",
    "Outcome",
    "Pipeline",
    "Rejection",
    "TaskRun",
    "eager_pipeline",
    "producer_pipeline",
    "worker_pipeline",
]
