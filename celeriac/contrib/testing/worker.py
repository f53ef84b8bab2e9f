"""Embedded workers for tests: a real consumer and pool, in the test's own process.

:func:`start_worker` is Celery's ``celery.contrib.testing.worker.start_worker``
with the same arguments::

    with start_worker(app, pool="threads", concurrency=4):
        assert add.delay(2, 3).get(timeout=10) == 5

It runs what a worker process runs -- the :class:`~celeriac.worker.consumer.Consumer`
with its hook pipeline, on the ``solo`` or ``threads`` pool -- on a background
thread, against the app's own broker and result backend. Because it is the same
process, ``memory://`` works (SQLite and Redis too), and a test sees everything a
task does at once.

What the supervisor does is partly done here and partly not: this module reads the
status pipe (a real ``os.pipe``) the consumer writes to, so the consumer runs exactly
as in production, and learns from it when the worker is ready. But nothing here kills
processes, so **hard time limits are not enforced** in-process (the supervisor
enforces them by killing the worker process; a warning says so, once, when a task
with one starts), nor ``revoke(terminate=True)`` of a task the pool cannot interrupt
itself (solo). With the solo pool the task runs on this module's thread, not the main
thread, so its soft time limit (``SIGALRM``) is not enforced either; the threads pool
enforces soft limits as it does in production. Green pools and prefork need a process
of their own: start a real worker (``celeriac worker``) for those.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import select
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ConfigurationError, TimeoutError

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.pools.base import Pool
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.status import StatusReader, StatusWriter

log = logging.getLogger("celeriac.worker")

#: Default level of the embedded worker's log (Celery's: ``WORKER_LOGLEVEL``, else "error").
WORKER_LOGLEVEL = os.environ.get("WORKER_LOGLEVEL", "error")
#: Pools that can run inside the test's process.
IN_PROCESS_POOLS = ("solo", "threads")
#: Options of Celery's ``WorkController`` for parts celeriac's embedded worker does not
#: have (no heartbeat in the broker, no mingle, no gossip): accepted so that Celery's
#: ``celery_worker_parameters`` port unchanged.
CELERY_ONLY_OPTIONS = frozenset({"without_heartbeat", "without_mingle", "without_gossip"})
#: The other keywords :func:`start_worker` passes to :class:`TestWorkController`.
WORKER_OPTIONS = frozenset({"queues", "hostname", "prefetch_multiplier", "max_tasks_per_child",
                            "max_memory_per_child"})
#: Longest the status pipe's reader sleeps before it looks again (seconds).
DRAIN_WAIT = 0.1
#: The log line format of the embedded worker (as a worker process's, without the node).
LOG_FORMAT = "[%(asctime)s %(levelname)s %(threadName)s] %(message)s"


class TestWorkController:
    """One worker process's consumer and pool, run on a thread of this process.

    Celery's ``start_worker`` yields its ``TestWorkController``; this is celeriac's.
    It stands in for the supervisor: it starts the pool, runs the consumer, drains
    the status pipe, and stops the consumer warm. ``consumer`` and ``pool`` are the
    real objects, for tests that want to look at them.
    """

    #: Not a test class, whatever its name says to pytest.
    __test__ = False

    def __init__(self, app: Celeriac, *, pool: str = "solo", concurrency: int = 1,
                 queues: Sequence[str] | str | None = None, hostname: str | None = None,
                 prefetch_multiplier: int | None = None, max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None, shutdown_timeout: float = 10.0
                 ) -> None:
        from celeriac.pools import POOLS, get_pool
        from celeriac.worker.consumer import Consumer
        from celeriac.worker.options import pool_queue
        from celeriac.worker.spec import WorkerSpec
        from celeriac.worker.status import StatusReader, StatusWriter

        if pool not in IN_PROCESS_POOLS:
            raise ConfigurationError(
                f"pool {pool!r} cannot run inside the test process (choose from "
                f"{', '.join(IN_PROCESS_POOLS)}); green pools patch the whole process and "
                "prefork needs processes: start a real 'celeriac worker' for those")
        if concurrency < 1:
            raise ConfigurationError(f"concurrency={concurrency!r}: must be at least 1")
        self.app = app
        self.hostname = hostname or f"celeriac-test.{os.getpid()}@{socket.gethostname()}"
        self.shutdown_timeout = shutdown_timeout
        default = str(app.conf.task_default_queue)
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        #: The queues consumed: as given, else the default queue and every pool's own
        #: (``celery.prefork``...), so tasks that ask for a pool run here too.
        self.queues: list[str] = list(queues or [default, *(pool_queue(default, p) for p in POOLS)])
        pool_class = get_pool(pool)
        self.pool: Pool = pool_class(concurrency, app.conf)
        multiplier = prefetch_multiplier or int(app.conf.worker_prefetch_multiplier)
        read_fd, write_fd = os.pipe()
        self.status: StatusWriter = StatusWriter(write_fd)
        self._reader: StatusReader = StatusReader(read_fd)
        spec = WorkerSpec(
            app=app.main or "__main__", pool=pool, concurrency=self.pool.concurrency,
            queues=self.queues, prefetch=self.pool.concurrency * multiplier,
            consumer_id=f"{self.hostname}/0/{uuid.uuid4().hex[:12]}", node=self.hostname,
            index=0, status_fd=write_fd,
            # The consumer stops when its parent is gone; here the "supervisor" is this
            # process, whose parent is what the consumer would see as its own.
            parent_pid=os.getppid(), max_tasks=max_tasks_per_child,
            max_memory_kb=max_memory_per_child, shutdown_timeout=shutdown_timeout)
        self.consumer: Consumer = Consumer(app, self.pool, spec, self.status)
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"celeriac-test-worker-{pool}",
                                        daemon=True)
        self._drain = threading.Thread(target=self._drain_status, name="celeriac-test-status",
                                       daemon=True)
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"<TestWorkController {self.hostname} {self.pool.name} x{self.pool.concurrency}>"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the pool and the consumer's thread; return once it takes messages."""
        self.pool.start()
        self._drain.start()
        self._thread.start()
        try:
            self.ensure_started()
        except BaseException:
            with contextlib.suppress(RuntimeError):  # the error that stopped it is raised
                self.stop()
            raise

    def ensure_started(self) -> None:
        """Wait until the consumer reported ready (raises what stopped it, if it died first)."""
        while not self._ready.wait(0.05):
            if self._stopped.is_set():
                raise RuntimeError("the embedded worker stopped before it was ready") \
                    from self._failure

    def _run(self) -> None:
        try:
            self.pool.run(self.consumer.run)
        except BaseException as exc:  # kept and raised from stop(), in the test's thread
            self._failure = exc
            log.exception("the embedded worker failed")
        finally:
            self._stopped.set()

    def stop(self) -> None:
        """Warm shutdown: unstarted messages go back to the broker uncharged, running tasks
        finish and are settled. Raises RuntimeError if that takes longer than
        ``shutdown_timeout`` (the thread is then left running), or if the worker failed."""
        self.consumer.stop("the embedded worker is stopping")
        self._thread.join(self.shutdown_timeout)
        if self._thread.is_alive():
            # The status pipe stays open and drained: a consumer that saw it break would
            # think its supervisor died, and exit the whole process after its timeout.
            raise RuntimeError(
                f"the embedded worker did not stop within shutdown_timeout "
                f"({self.shutdown_timeout}s): {self.pool.running()} task(s) still run; "
                "raise shutdown_timeout if your tasks take longer")
        if self._drain.is_alive():  # not closed yet (stop() may be called twice)
            self.consumer.pipeline.process_stopping(self.app, 0 if self._failure is None else 1)
            self.pool.stop()
            self.status.close()  # the end of the pipe: the drain thread reads EOF and ends
            self._drain.join()
            self._reader.close()
        if self._failure is not None:
            raise RuntimeError("the embedded worker failed") from self._failure

    # -- the supervisor's end of the status pipe -------------------------------------------
    def _drain_status(self) -> None:
        """Read the status pipe until the worker closes it: the consumer's writes never
        block, and what a supervisor would act on is noted."""
        from celeriac.worker.status import Ready, Started

        fd = self._reader.fd
        while True:
            # A timeout, not a bare wait: in a gevent-patched process, select() on the
            # read end does not always wake when this process closes the write end.
            select.select([fd], [], [], DRAIN_WAIT)
            events, still_open = self._reader.read()
            for event in events:
                if isinstance(event, Ready):
                    self._ready.set()
                elif isinstance(event, Started) and event.hard_limit:
                    self._warn_once("hard", "task %s[%s] has a hard time limit (%ss); embedded "
                                    "workers do not enforce hard time limits (the supervisor "
                                    "of 'celeriac worker' does, by killing the process)",
                                    event.name, event.task_id, event.hard_limit)
                elif event.kind == "terminate":
                    self._warn_once("terminate", "a revoke(terminate=True) asked to stop a "
                                    "running task that only the supervisor of 'celeriac worker' "
                                    "can stop (by replacing the process); the embedded worker "
                                    "lets it run")
            if not still_open:
                return

    def _warn_once(self, what: str, message: str, *args: Any) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message, *args)

    # -- what tests call ------------------------------------------------------------------
    def ping(self, timeout: float = 10.0) -> None:
        """Send ``celery.ping`` to the first queue consumed and wait for ``"pong"``."""
        from celeriac.contrib.testing.tasks import register_ping

        result = register_ping(self.app).apply_async(queue=self.queues[0])
        try:
            answer = result.get(timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"the embedded worker did not answer celery.ping on queue "
                               f"{self.queues[0]!r} within {timeout}s") from exc
        if answer != "pong":
            raise RuntimeError(f"celery.ping answered {answer!r}, not 'pong'")

    def reload(self, modules: Sequence[str] | None = None, reload: bool = False) -> None:
        """Import ``modules`` (and re-import those already imported, with ``reload=True``),
        as Celery's ``WorkController.reload``. A task registered on the app after the
        worker started needs nothing: the worker looks up each message's task when it
        runs it."""
        import sys

        for name in dict.fromkeys(modules or ()):
            module = sys.modules.get(name)
            if module is None:
                importlib.import_module(name)
            elif reload:
                importlib.reload(module)


@contextmanager
def _worker_logging(loglevel: str | int | None, logfile: str | None) -> Iterator[None]:
    """Log the worker's lines at ``loglevel`` to stderr (or ``logfile``) while it runs.

    Only the ``celeriac`` logger is touched, and restored afterwards: the root logger
    and pytest's capture are left alone. ``None`` leaves logging as it is.
    """
    if loglevel is None:
        yield
        return
    logger = logging.getLogger("celeriac")
    handler: logging.Handler = (logging.FileHandler(logfile) if logfile
                                else logging.StreamHandler())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    previous = logger.level
    logger.setLevel(loglevel.upper() if isinstance(loglevel, str) else loglevel)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def _worker_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keywords for :class:`TestWorkController`; an unknown one is an error with a hint."""
    from celeriac.settings import suggest

    known = WORKER_OPTIONS | CELERY_ONLY_OPTIONS
    for key in kwargs:
        if key not in known:
            raise ConfigurationError(
                f"unknown option {key!r} for start_worker{suggest(key, sorted(known))}; "
                f"known: {', '.join(sorted(known))}")
    if kwargs.get("without_heartbeat") is False:
        log.warning("start_worker(without_heartbeat=False): the embedded worker records no "
                    "heartbeat in the broker (the supervisor of 'celeriac worker' does)")
    return {key: value for key, value in kwargs.items() if key in WORKER_OPTIONS}


@contextmanager
def start_worker(app: Celeriac, concurrency: int = 1, pool: str = "solo",
                 loglevel: str | int | None = WORKER_LOGLEVEL, logfile: str | None = None,
                 perform_ping_check: bool = True, ping_task_timeout: float = 10.0,
                 shutdown_timeout: float = 10.0, **kwargs: Any) -> Iterator[TestWorkController]:
    """Run a worker for ``app`` in this process while the block runs.

    ``pool`` is ``"solo"`` or ``"threads"`` (with ``concurrency`` threads). Keywords:
    ``queues`` (default: the default queue and every pool's own), ``hostname``,
    ``prefetch_multiplier``, ``max_tasks_per_child``, ``max_memory_per_child``; Celery's
    ``without_heartbeat``/``without_mingle``/``without_gossip`` are accepted. Once the
    worker is up, ``perform_ping_check`` sends ``celery.ping`` and waits up to
    ``ping_task_timeout`` for ``"pong"``. On exit the worker stops warm and must be gone
    within ``shutdown_timeout`` seconds (RuntimeError otherwise). ``loglevel`` (None:
    leave logging alone) and ``logfile`` set where the ``celeriac`` logger writes
    meanwhile. ``app`` is the current and default app meanwhile. Yields the
    :class:`TestWorkController`.
    """
    from celeriac._state import using_app

    options = _worker_options(kwargs)
    app.finalize()
    worker = TestWorkController(app, pool=pool, concurrency=concurrency,
                                shutdown_timeout=shutdown_timeout, **options)
    # The app is current and the default while the worker runs (Celery's
    # setup_app_for_worker), so shared tasks run and send with it, then restored.
    with using_app(app), _worker_logging(loglevel, logfile):
        worker.start()
        try:
            if perform_ping_check:
                worker.ping(ping_task_timeout)
            yield worker
        finally:
            worker.stop()
