"""Status reporting: tell the supervisor, over the status pipe, which tasks started
and ended (see :mod:`celeriac.worker.status`)."""

from __future__ import annotations

from celeriac.middleware.base import Finished, Middleware, TaskRun
from celeriac.worker.status import StatusWriter


class StatusReporter(Middleware):
    """First in the pipeline: a start is reported before anything else can crash the
    process, and (``after_*`` running in reverse) an end after everything else."""

    def __init__(self, status: StatusWriter) -> None:
        self.status = status

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
        self.status.started(delivery, request.id, run.task.name, run.time_limit,
                            run.ignore_result, str(headers.get("argsrepr") or ""),
                            str(headers.get("kwargsrepr") or ""), run.task.is_async)

    def after_task(self, run: TaskRun) -> None:
        if run.delivery is not None:
            self.status.finished(run.delivery)

    def before_settle(self, batch: list[Finished]) -> list[Finished]:
        self.status.flush()
        return batch
