"""What the supervisor tells a worker process it starts, and how.

The supervisor starts each worker process as a fresh interpreter and hands it a
:class:`WorkerSpec` as JSON in the ``CELERIAC_WORKER_SPEC`` environment
variable: nothing is inherited through ``fork()`` but this value and two pipes
(status to the supervisor, commands from it).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

ENV_VAR = "CELERIAC_WORKER_SPEC"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one worker process needs to know."""

    #: The ``-A`` value: ``module``, ``module:attr`` or ``path/to/file.py[:attr]``.
    app: str
    pool: str
    #: Tasks at once in this process.
    concurrency: int
    queues: list[str]
    #: Most messages this process holds at once (running and prefetched).
    prefetch: int
    #: Broker consumer id; unique per process start, so a dead process's
    #: messages can be released without touching its replacement's.
    consumer_id: str
    node: str
    index: int
    #: Write end of the status pipe to the supervisor.
    status_fd: int
    #: PID of the supervisor; the process shuts down when it is gone.
    parent_pid: int
    max_tasks: int | None = None
    max_memory_kb: int | None = None
    #: Seconds running tasks get on a warm shutdown; the supervisor enforces it, or the
    #: process itself when the supervisor is gone.
    shutdown_timeout: float = 30.0
    loglevel: str = "INFO"
    #: Settings from the command line, applied over the app's own.
    settings: dict[str, Any] = field(default_factory=dict)
    #: Directory the app is imported from.
    workdir: str = "."
    #: Read end of the command pipe from the supervisor (-1: none, e.g. in tests).
    command_fd: int = -1
    #: Task name -> [soft, hard] limits set by ``celeriac control time_limit`` before this
    #: process started; they apply over the task's own and its messages' limits.
    time_limits: dict[str, list[float | None]] = field(default_factory=dict)
    #: ``--logfile`` as given (abbreviations not expanded: the process expands ``%i``
    #: with its own index); None logs to stderr.
    logfile: str | None = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> WorkerSpec:
        raw = os.environ.get(ENV_VAR)
        if not raw:
            raise SystemExit(f"{ENV_VAR} is not set: worker processes are started by "
                             "'celeriac worker', not by hand")
        return cls(**json.loads(raw))
