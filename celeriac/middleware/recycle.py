"""Recycling: a worker process that ran ``max_tasks_per_child`` tasks, or whose
resident memory passed ``max_memory_per_child`` KiB, finishes warm and exits; the
supervisor starts a fresh one."""

from __future__ import annotations

from typing import Protocol

import psutil

from celeriac.middleware.base import Finished, Middleware


class Recyclable(Protocol):
    """What the recycler needs of the consumer."""

    tasks_run: int

    def stop(self, reason: str = "shutdown") -> None: ...


class Recycler(Middleware):
    """Asks the consumer to stop once a settled batch took it past a limit."""

    def __init__(self, consumer: Recyclable, max_tasks: int | None,
                 max_memory_kb: int | None) -> None:
        self.consumer = consumer
        self.max_tasks = max_tasks
        self.max_memory_kb = max_memory_kb
        self._process = psutil.Process()

    def after_settle(self, batch: list[Finished]) -> None:
        limit = self.max_tasks
        if limit and self.consumer.tasks_run >= limit:
            self.consumer.stop(f"max tasks per child ({limit}) reached")
            return
        memory_limit = self.max_memory_kb
        if memory_limit:
            rss_kb = self._process.memory_info().rss // 1024
            if rss_kb > memory_limit:
                self.consumer.stop(
                    f"memory {rss_kb} KiB over max memory per child ({memory_limit} KiB)")
