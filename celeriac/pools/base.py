"""The pool interface: where tasks run inside one worker process.

A worker process has one consumer (fetch, leases, acks) and one pool. The pool
gives the consumer a handful of primitives, so the consumer never needs to know
whether it runs on threads, on the main thread, or on greenlets:

* :meth:`Pool.run` runs the consumer's main loop in the right place;
* :meth:`Pool.submit` starts a job when :meth:`Pool.free_slots` says there is room;
* :meth:`Pool.event` makes the kind of event the consumer can wait on and a
  job can set from wherever it runs;
* :meth:`Pool.limits` wraps a job in its soft (and, where the pool can, hard)
  time limit;
* :meth:`Pool.run_body` runs a task's body inside those limits: a sync task's
  function here, an ``async def`` task's coroutine on the process's event loop while
  this slot waits on a :meth:`Pool.threadsafe_event` (``docs/asyncio.md``);
* :meth:`Pool.join` waits for running jobs at shutdown.

How many processes a pool wants is its :meth:`Pool.layout`: prefork is N
processes of one task each; threads and green pools are one process (or
``--processes N``) of N tasks each. The supervisor reads it before it starts
anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from celeriac.exceptions import ConfigurationError


class EventLike(Protocol):
    """The part of ``threading.Event`` the consumer needs."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


Job = Callable[[], None]


@dataclass(frozen=True)
class JobInfo:
    """Which message and task a job runs: lets a pool name the task in its reports."""

    delivery_id: str
    task: str
    task_id: str


@dataclass
class Stall:
    """A stretch of time during which one job blocked an event loop: a green pool's hub, or
    the process's asyncio loop (any pool: :mod:`celeriac.aio.monitor`)."""

    job: JobInfo | None
    #: Seconds the loop was blocked (so far, while ``ended`` is False).
    seconds: float
    #: The blocking job's stack, innermost call last.
    stack: str
    ended: bool = False


class Pool(ABC):
    """Runs jobs (one task each) concurrently inside one worker process."""

    #: The ``-P`` name.
    name: ClassVar[str]
    #: True for greenlet pools (gevent, eventlet): used for routing by compatibility.
    green: ClassVar[bool] = False
    #: True when :meth:`limits` enforces the hard limit itself (a greenlet can be
    #: killed); otherwise the supervisor enforces it by killing the process.
    enforces_hard_limit: ClassVar[bool] = False
    #: True when :meth:`interrupt` can stop one running job and leave the others running.
    can_interrupt: ClassVar[bool] = False
    #: True when :meth:`resize` changes how many jobs run at once in one process (threads,
    #: green pools); a pool of one task per process (solo, prefork) grows by processes.
    resizable: ClassVar[bool] = False
    #: Modules that patching affects which were imported before :meth:`prepare_process`
    #: patched (the worker logs a warning naming them).
    imported_too_early: ClassVar[list[str]] = []

    def __init__(self, concurrency: int, conf: Mapping[str, Any] | None = None) -> None:
        self.concurrency = concurrency
        #: The app's settings (a green pool reads worker_max_blocking_time from it).
        self.conf: Mapping[str, Any] = conf or {}
        #: Called with a :class:`Stall` when the pool saw its event loop blocked.
        self.on_stall: Callable[[Stall], None] | None = None
        #: Set by the consumer; called by a pool whose jobs run on one thread (gevent:
        #: the consumer's; asyncio: its jobs thread) once per turn of that thread in
        #: which jobs ended, their slots free: the consumer hands them their next waiting
        #: messages there and then, not when its loop is back from its broker round
        #: trips or awake. Other pools never call it.
        self.on_free: Callable[[], None] | None = None
        #: The loop thread :meth:`watch_loop` was last called for from :meth:`run_body`.
        self._watched: Any = None

    @classmethod
    def layout(cls, concurrency: int, processes: int | None) -> tuple[int, int]:
        """(processes to start, tasks at once in each) for ``-c``/``--processes``."""
        return (processes or 1, concurrency)

    @classmethod  # noqa: B027 - optional hook
    def prepare_process(cls) -> None:
        """First thing a worker process does, before importing the app (green pools patch here)."""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Get ready to take jobs."""

    @abstractmethod
    def run(self, main: Callable[[], None]) -> None:
        """Run the consumer's loop ``main`` and return when it returns."""

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Start ``job`` now. Only called while :meth:`free_slots` is positive."""

    def let_jobs_start(self) -> None:  # noqa: B027 - optional hook
        """Called by the consumer after it submitted jobs: a pool whose jobs share the
        consumer's thread (green threads) lets them run up to their first wait now,
        before the consumer goes back to the broker. Otherwise a fetch whose reply is
        already there when it reads it never yields, and the jobs it just submitted
        start a whole round trip later. Nothing to do where jobs run on other threads."""

    @abstractmethod
    def free_slots(self) -> int:
        """How many more jobs could start right now."""

    @abstractmethod
    def running(self) -> int:
        """How many jobs are running."""

    @abstractmethod
    def event(self) -> EventLike:
        """A new event that jobs can set and the consumer can wait on."""

    @abstractmethod
    def join(self, timeout: float | None = None) -> bool:
        """Wait for running jobs; True when none is left."""

    def limits(self, soft: float | None, hard: float | None,
               job: JobInfo | None = None) -> AbstractContextManager[None]:
        """Enforce time limits around one job, called where the job runs.

        The default enforces nothing here: the soft limit is the pool's to
        implement, and the supervisor enforces the hard limit.
        """
        return _no_limits()

    def start_service(self, target: Callable[[], None], name: str) -> Callable[[float | None], bool]:
        """Run ``target`` beside the consumer's loop until it returns, where it may wait on
        the network without holding the loop up: a daemon thread here, a greenlet on the
        green pools (whose sockets belong to the hub's thread). Returns its ``join``:
        given a timeout, True once ``target`` has returned.

        For work the loop would otherwise wait for, such as publishing a batch of task
        events (:class:`~celeriac.middleware.events.TaskEvents`): the events of a no-op
        task at ``-c 100`` cost 3% of the rate more when the loop sent them itself.
        """
        import threading  # not at the top: a green pool imports this module before patching

        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()

        def join(timeout: float | None) -> bool:
            thread.join(timeout)
            return not thread.is_alive()

        return join

    def threadsafe_event(self) -> EventLike:
        """A new event a job of this pool waits on its own way (a thread blocks, a greenlet
        lets its hub run) and whose ``set()`` any native thread may call: the event
        loop's thread sets it when a coroutine a job awaits has ended."""
        import threading  # not at the top: a green pool imports this module before patching

        return threading.Event()

    def run_body(self, body: Callable[[], Any], *, is_async: bool, soft: float | None,
                 hard: float | None, job: JobInfo | None = None) -> Any:
        """Run a task's body in this slot, inside its time limits, and return its value.

        ``body()`` calls the task's function. For an ``async def`` task (``is_async``)
        that returns a coroutine, which runs on the process's event loop while this slot
        waits and forwards what the pool raises in it (soft limit, hard limit,
        terminate) into the coroutine (:func:`celeriac.aio.await_.run_coroutine`). A
        pool whose hard limit is the supervisor's has the slot end the coroutine at the
        hard limit itself; the supervisor only steps in when the loop is blocked.
        """
        if not is_async:
            with self.limits(soft, hard, job):
                return body()
        run_coroutine, shared_loop = _aio()
        if self.on_stall is not None:  # a worker's process: someone to tell
            shared = shared_loop()
            if shared is not self._watched:  # once per loop, not a lookup under a lock per task
                self.watch_loop(shared)
                self._watched = shared
        in_slot = None if self.enforces_hard_limit else hard
        with self.limits(soft, hard, job):
            return run_coroutine(body(), event=self.threadsafe_event(), hard=in_slot,
                                 name=f"{job.task}[{job.task_id}]" if job else None, job=job)

    def watch_loop(self, loop_thread: Any = None) -> None:
        """Report stalls of the process's event loop -- a coroutine holding it longer than
        ``worker_max_blocking_time`` -- to :attr:`on_stall`, as the gevent pool does for
        its hub (:mod:`celeriac.aio.monitor`). ``loop_thread``: the process's shared loop
        (started here if need be) unless given. Once per loop: every async task calls it,
        as the shared loop starts with the first one (``-P asyncio`` starts it eagerly)."""
        from celeriac.aio.loop import shared_loop
        from celeriac.aio.monitor import watch

        max_blocking = float(self.conf.get("worker_max_blocking_time") or 0.1)
        watch(loop_thread or shared_loop(), max_blocking, self._report_stall)

    def _report_stall(self, stall: Stall) -> None:
        """On the monitor thread: ``on_stall`` as it is now (set after the pool is made)."""
        on_stall = self.on_stall
        if on_stall is not None:
            on_stall(stall)

    def current_job(self) -> Any:
        """A handle on the job running here, for :meth:`interrupt` (called from inside the
        job). None when the pool cannot interrupt a job in-process."""
        return None

    def interrupt(self, handle: Any, exc: type[BaseException]) -> None:
        """Raise ``exc`` in the job ``handle`` names (``revoke(terminate=True)``).

        Only pools with ``can_interrupt`` implement it; the others (prefork,
        solo: the task runs on the process's main thread) are stopped by the
        supervisor replacing the whole process.
        """
        raise NotImplementedError(f"the {self.name} pool stops a task by replacing its process")

    def resize(self, concurrency: int) -> None:
        """Run up to ``concurrency`` jobs at once from now on (``celeriac control pool_grow``).

        Running jobs are never stopped: after a shrink, no job starts until enough
        have ended. Only pools with ``resizable`` implement it.
        """
        raise ConfigurationError(f"the {self.name} pool runs one task per process: the "
                                 "supervisor resizes it by starting or stopping processes")

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` took."""


@contextmanager
def _no_limits() -> Iterator[None]:
    yield


_aio_functions: tuple[Callable[..., Any], Callable[[], Any]] | None = None


def _aio() -> tuple[Callable[..., Any], Callable[[], Any]]:
    """``run_coroutine`` and ``shared_loop``, imported on the first async task (the aio
    modules import this one; a ``from`` import on every task cost about 1 us)."""
    global _aio_functions
    if _aio_functions is None:
        from celeriac.aio.await_ import run_coroutine
        from celeriac.aio.loop import shared_loop

        _aio_functions = (run_coroutine, shared_loop)
    return _aio_functions
