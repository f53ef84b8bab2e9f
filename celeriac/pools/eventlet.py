"""The eventlet pool: ``-c N`` green threads in one process, with eventlet's own patching.

It keeps the same contract as the gevent pool where eventlet allows:

* patching (``eventlet.monkey_patch()``) happens first, before the app is
  imported, with the same warning when patch-sensitive modules came earlier;
* blocking calls (SQLite) run on eventlet's native thread pool (``tpool``);
* soft and hard time limits are ``eventlet.Timeout``s raised in the task's green
  thread at its next cooperative switch; a task that never switches blocks the
  hub, and the supervisor kills and replaces the process after the hard limit.

What differs: eventlet has no monitor thread comparable to gevent's, so there is
no blocking-call detection (``--max-blocking-time`` is ignored); when the
supervisor must kill a blocked eventlet process it cannot tell which task
blocked, and charges every task that overran its hard limit. eventlet itself is
in maintenance mode upstream; prefer gevent for new projects.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

from celeriac.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from celeriac.pools.base import EventLike, Job, JobInfo, Pool

#: Modules whose import before patching means some code holds unpatched objects.
PATCH_SENSITIVE = ("ssl", "socket", "threading", "select", "subprocess", "queue")

# ``import eventlet`` imports socket, ssl and threading itself, so it may only
# happen in prepare_process(), after looking at what was imported before. Fail
# here, at pool lookup, when it is not installed at all.
if importlib.util.find_spec("eventlet") is None:
    raise ImportError("eventlet is not installed", name="eventlet")


class EventletPool(Pool):
    """Runs up to ``concurrency`` jobs at once as eventlet green threads."""

    name = "eventlet"
    green = True
    enforces_hard_limit = True
    can_interrupt = True
    resizable = True
    imported_too_early: ClassVar[list[str]] = []

    @classmethod
    def prepare_process(cls) -> None:
        cls.imported_too_early = [name for name in PATCH_SENSITIVE if name in sys.modules]
        import warnings

        # The message starts with a newline, which ".*" would not match.
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        import eventlet

        eventlet.monkey_patch()

    def start(self) -> None:
        import eventlet
        from eventlet import tpool

        from celeriac.blocking import set_offloader

        self._pool = eventlet.GreenPool(self.concurrency)
        self._sleep = eventlet.sleep

        def offload(fn: Callable[..., Any], *args: Any) -> Any:
            return tpool.execute(fn, *args)

        set_offloader(offload)

    def run(self, main: Callable[[], None]) -> None:
        import eventlet

        eventlet.spawn(main).wait()

    def submit(self, job: Job) -> None:
        self._pool.spawn_n(job)

    def let_jobs_start(self) -> None:
        self._sleep(0)

    def free_slots(self) -> int:
        free: int = self._pool.free()
        return free

    def running(self) -> int:
        running: int = self._pool.running()
        return running

    def resize(self, concurrency: int) -> None:
        self._pool.resize(concurrency)
        self.concurrency = concurrency

    def event(self) -> EventLike:
        # threading is patched by now: this Event waits cooperatively and can be set
        # again after clear(), unlike eventlet.event.Event.
        import threading

        return threading.Event()

    def start_service(self, target: Callable[[], None], name: str) -> Callable[[float | None], bool]:
        """A green thread of the hub (``name`` is for the other pools' threads)."""
        import eventlet

        thread = eventlet.spawn(target)

        def join(timeout: float | None) -> bool:
            with eventlet.Timeout(timeout, False):
                thread.wait()
                return True
            return False

        return join

    def threadsafe_event(self) -> EventLike:
        from celeriac.aio.events import eventlet_event

        return eventlet_event()

    def join(self, timeout: float | None = None) -> bool:
        import eventlet

        with eventlet.Timeout(timeout, False):
            self._pool.waitall()
            return True
        return False

    def limits(self, soft: float | None, hard: float | None,
               job: JobInfo | None = None) -> AbstractContextManager[None]:
        return self._timeouts(soft, hard)

    @contextmanager
    def _timeouts(self, soft: float | None, hard: float | None) -> Iterator[None]:
        import eventlet

        timers = []
        if soft:
            timers.append(eventlet.Timeout(soft, SoftTimeLimitExceeded(
                f"soft time limit ({soft}s) exceeded")))
        if hard:
            timers.append(eventlet.Timeout(hard, HardTimeLimit(
                f"hard time limit ({hard}s) exceeded")))
        try:
            yield
        finally:
            for timer in timers:
                timer.cancel()

    def current_job(self) -> Any:
        import eventlet

        return eventlet.getcurrent()

    def interrupt(self, handle: Any, exc: type[BaseException]) -> None:
        from eventlet import greenthread

        greenthread.kill(handle, exc)

    def stop(self) -> None:
        from celeriac.blocking import set_offloader

        set_offloader(None)
