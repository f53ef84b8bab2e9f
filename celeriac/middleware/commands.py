"""Remote control inside a worker process: apply what the supervisor sends over the
command pipe (:mod:`celeriac.worker.commands`).

The supervisor answers most of ``celeriac inspect`` itself and decides every
change ``celeriac control`` asks for (:mod:`celeriac.middleware.remote`); what
only a worker process can do arrives here, read on the consumer loop's turns
(at most every 20 ms, with one non-blocking read): consume other queues, run more
or fewer tasks at once, run a task under other time or rate limits, list the messages
held but not started, stop. Time limits set this way apply from the task's next message on,
over both the task's own limits and those its message carries: an operator who
lowers a limit at run time means every run from now on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import MessageDecodeError
from celeriac.message import decode, peek_task_id
from celeriac.middleware.base import Middleware, TaskRun
from celeriac.worker.commands import (
    Command,
    CommandReader,
    ReportReserved,
    SetConcurrency,
    SetQueues,
    SetRateLimit,
    SetTimeLimit,
    Stop,
)
from celeriac.worker.status import NAME_LIMIT, REPR_LIMIT

if TYPE_CHECKING:
    from celeriac.brokers.base import Delivery
    from celeriac.worker.consumer import Consumer

log = logging.getLogger("celeriac.worker")

#: Seconds between two reads of the command pipe (commands wait at most this long).
READ_INTERVAL = 0.02


class CommandListener(Middleware):
    """Reads the command pipe on every turn of the consumer's loop and applies each command."""

    def __init__(self, consumer: Consumer, reader: CommandReader,
                 time_limits: Mapping[str, Sequence[float | None]] | None = None) -> None:
        self.consumer = consumer
        self.reader = reader
        self._next_read = 0.0
        #: Task name -> (soft, hard), applied to every run of that task from now on.
        self.time_limits: dict[str, tuple[float | None, float | None]] = {
            name: (limits[0], limits[1]) for name, limits in (time_limits or {}).items()}

    def tick(self) -> None:
        # A busy loop turns every few ms; one clock read keeps it from a system call each time.
        now = time.monotonic()
        if now < self._next_read:
            return
        self._next_read = now + READ_INTERVAL
        for command in self.reader.read():
            self.apply(command)

    def apply(self, command: Command) -> None:
        consumer = self.consumer
        if isinstance(command, SetQueues):
            handed_back = consumer.set_queues(list(command.queues))
            log.info("now consuming from %s%s", ", ".join(command.queues) or "no queue",
                     f"; handed back {len(handed_back)} message(s) of cancelled queues"
                     if handed_back else "")
        elif isinstance(command, SetConcurrency):
            consumer.set_concurrency(command.concurrency, command.prefetch)
            log.info("now running up to %d task(s) at once", command.concurrency)
        elif isinstance(command, SetTimeLimit):
            self.time_limits[command.task] = (command.soft, command.hard)
            log.info("new time limits for %s: soft=%s hard=%s", command.task, command.soft,
                     command.hard)
        elif isinstance(command, ReportReserved):
            consumer.status.reserved(command.request, [self._describe(d) for d in consumer.waiting])
        elif isinstance(command, Stop):
            consumer.stop(command.reason)
        elif isinstance(command, SetRateLimit) and consumer.executor.limits is not None:
            consumer.executor.limits.set_rate(command.task, command.rate)

    def message_received(self, run: TaskRun) -> None:
        limits = self.time_limits.get(run.task.name)
        if limits is not None:
            run.soft_time_limit, run.time_limit = limits

    def _describe(self, delivery: Delivery) -> dict[str, Any]:
        """A held message as Celery's ``inspect reserved`` shows one (``Request.info()``)."""
        try:
            message = decode(delivery.body, self.consumer.executor.accept)
            name, task_id = message.task, message.id
            args = str(message.headers.get("argsrepr") or "")
            kwargs = str(message.headers.get("kwargsrepr") or "")
        except MessageDecodeError:
            found_name, found_id = peek_task_id(delivery.body)
            name, task_id, args, kwargs = found_name or "", found_id or "", "", ""
        return {
            "id": task_id, "name": name[:NAME_LIMIT], "args": args[:REPR_LIMIT],
            "kwargs": kwargs[:REPR_LIMIT], "type": name[:NAME_LIMIT],
            "hostname": self.consumer.spec.node, "time_start": None, "acknowledged": False,
            "delivery_info": {"routing_key": delivery.queue, "priority": delivery.priority,
                              "redelivered": delivery.delivery_count > 1},
            "worker_pid": os.getpid(),
        }
