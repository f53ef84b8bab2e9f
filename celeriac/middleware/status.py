"""Status reporting: tell the supervisor, over the status pipe, which tasks started
and ended (see :mod:`celeriac.worker.status`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from celeriac.middleware.base import Finished, Middleware, TaskRun
from celeriac.worker.status import StatusWriter

if TYPE_CHECKING:
    from celeriac.pools.base import Pool


class StatusReporter(Middleware):
    """First in the pipeline: a start is reported before anything else can crash the
    process, and (``after_*`` running in reverse) an end after everything else.

    On a green pool, jobs that start together report together: a job keeps its start
    line, lets the other new jobs reach theirs (they share its thread), then writes
    every kept line at once, before any of their bodies runs. One pipe write then
    serves a batch of tasks instead of one each."""

    def __init__(self, status: StatusWriter, pool: Pool | None = None) -> None:
        self.status = status
        self.pool = pool if pool is not None and pool.green else None

    def before_task(self, run: TaskRun) -> None:
        delivery = run.delivery
        if delivery is None:
            return
        headers = run.message.headers if run.message is not None else {}
        request = run.request
        if request.errbacks or request.chain or request.chord:
            # Before the start: the supervisor may have to end this task and do these.
            self.status.followups(delivery, {
                "errbacks": request.errbacks, "chain": request.chain, "chord": request.chord,
                "group": request.group, "group_index": request.group_index})
        pool = self.pool
        together = pool is not None and pool.running() > 1
        self.status.started(delivery, request.id, run.task.name, run.time_limit,
                            run.ignore_result, str(headers.get("argsrepr") or ""),
                            str(headers.get("kwargsrepr") or ""), run.task.is_async,
                            later=together)
        if together:
            assert pool is not None
            pool.let_jobs_start()
            self.status.flush_starts()

    def after_task(self, run: TaskRun) -> None:
        if run.delivery is not None:
            self.status.finished(run.delivery)

    def before_settle(self, batch: list[Finished]) -> list[Finished]:
        self.status.flush()
        return batch
