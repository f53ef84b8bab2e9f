"""The consumer: the loop in each worker process that talks to the broker.

It keeps up to ``prefetch`` messages claimed (running plus waiting), fetches in
batches, hands messages to the pool as slots free up, renews the leases of
everything it holds, and settles finished messages in batches (one ``ack`` call
for all that finished since the last turn). Jobs never talk to the broker
themselves, except for the early ack of ``acks_late=False`` tasks, which must
happen before the task runs.

Shutdown is warm: stop fetching, hand unstarted messages back at once
(uncharged), let running tasks finish, settle them, return. When the supervisor
is gone nobody else enforces the shutdown timeout, so the process does: past
it, it exits and leaves the running tasks' messages to their leases.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, NoReturn

from celeriac.brokers.base import Delivery
from celeriac.middleware import (
    RETRY_LATER,
    Outcome,
    Pipeline,
    Rejection,
    TaskRun,
    worker_pipeline,
)
from celeriac.pools.base import Pool
from celeriac.worker import heap
from celeriac.worker.executor import Executor
from celeriac.worker.pausing import PauseWatch
from celeriac.worker.settle import Settler
from celeriac.worker.spec import WorkerSpec
from celeriac.worker.status import StatusWriter

if TYPE_CHECKING:
    from celeriac.app import Celeriac

log = logging.getLogger("celeriac.worker")

#: Longest the loop waits for new messages before it settles and looks around again.
FETCH_WAIT = 0.05
#: First wait of a busy loop that has room for more messages (doubles up to FETCH_WAIT).
BUSY_WAIT_MIN = 0.002
#: Waiting messages built ahead per turn of an idle loop (:meth:`Consumer._build_ahead`):
#: about a millisecond of a green pool's thread.
AHEAD_CHUNK = 50


class Consumer:
    """Fetches, dispatches, renews and settles for one worker process."""

    def __init__(self, app: Celeriac, pool: Pool, spec: WorkerSpec, status: StatusWriter,
                 pipeline: Pipeline | None = None) -> None:
        self.app = app
        self.pool = pool
        self.spec = spec
        self.status = status
        self.broker = app.broker
        self.lease = float(app.conf.broker_lease_timeout)
        #: The hooks of this process (built from the spec unless given: tests pass their own).
        self.pipeline = pipeline or worker_pipeline(app, pool, status, self, spec.max_tasks,
                                                    spec.max_memory_kb)
        self.executor = Executor(app, pool, self.pipeline, self._early_ack, spec.node)
        self.settler = Settler(self.broker, self.pipeline)
        #: Every message claimed and not yet settled, by delivery id.
        self.held: dict[str, Delivery] = {}
        #: Claimed messages not yet handed to the pool.
        self.waiting: deque[Delivery] = deque()
        #: Waiting messages decoded and built into runs ahead of their start, by delivery
        #: id (:meth:`_build_ahead`; None: it cannot run, its start reports why); taken
        #: when the message is dispatched.
        self.ahead: dict[str, TaskRun | None] = {}
        #: Finished jobs waiting to be settled (appended from jobs, drained by the loop).
        self.finished: deque[tuple[Delivery, Outcome]] = deque()
        self.wake = pool.event()
        self.stopping = False
        self.stop_reason = ""
        self.tasks_run = 0
        #: Jobs handed to the pool and not settled yet (they count towards max_tasks).
        self.unsettled = 0
        #: The queues consumed and the most messages held at once; remote control
        #: (``add_consumer``, ``pool_grow``) changes them while the process runs.
        self.queues = list(spec.queues)
        self.prefetch = spec.prefetch
        #: Whether the broker can tell a lost claim locally (Broker.lost): asked for each
        #: message before it starts; the others are not asked at all.
        self.may_lose = self.broker.knows_lost_claims
        #: Delivery id -> group of each suspect message running here (see :meth:`_dispatch`).
        self.suspects: dict[str, int] = {}
        #: Paused queues are not fetched from (read from the broker once a second).
        self.pauses = PauseWatch(self.broker)
        #: When the loop last went round, and how late a turn means the process was
        #: frozen (see :meth:`run`).
        self.last_turn = time.monotonic()
        self.frozen_after = float(app.conf.worker_heartbeat_interval)
        #: Held while the messages waiting here, the runs built ahead and the count of
        #: unsettled jobs change: the -P asyncio pool hands freed slots their next
        #: messages from its jobs thread (:meth:`_refill`), beside this loop.
        self.handover = threading.Lock()
        pool.on_free = self._refill

    def stop(self, reason: str = "shutdown") -> None:
        """Ask the loop to shut down warm (safe from a signal handler)."""
        if not self.stopping:
            self.stop_reason = reason
            self.stopping = True
        self.wake.set()

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> None:
        self.pipeline.process_started(self.app)
        self.status.ready()
        renew_every = self.lease / 3
        self.last_turn = time.monotonic()
        next_renew = self.last_turn + renew_every
        # A turn later than frozen_after means the process was frozen (SIGSTOP, a
        # suspended VM) or starved: its node's heartbeat may have lapsed and a live node
        # released what it holds. Renew before starting anything, so waiting messages it
        # lost are dropped (_on_time).
        #: How long a busy loop with room waits before it looks at the broker again.
        busy_wait = BUSY_WAIT_MIN
        tick = self.pipeline.tick
        while True:
            # A slot that freed gets its next task before the finished one is settled:
            # a wave of tasks that end together would otherwise wait, slot after slot,
            # for the results and acks of the whole wave before the first restart. Not
            # when the supervisor is gone (nothing new starts then) nor on a late turn
            # (renew first, below: a waiting message may have passed to another node).
            self._check_parent()
            if not self.stopping and self._on_time():
                self._start_waiting()
            self._settle()
            tick()
            self._check_parent()
            if self.stopping:
                break
            now = time.monotonic()
            if now >= next_renew or now - self.last_turn >= self.frozen_after:
                self._renew()
                next_renew = time.monotonic() + renew_every
            self.last_turn = now
            self._start_waiting()
            room = 0 if self._at_task_limit() else self.prefetch - len(self.held)
            # While jobs run, a finishing one must be settled (its result stored) at
            # once, so the loop waits on the wake-up event rather than in the broker.
            # It cannot block in the broker then, so it looks again after a short wait
            # that doubles while nothing comes (a new message waits at most FETCH_WAIT,
            # usually a few ms) and starts over when something does.
            busy = bool(self.finished) or self.pool.running() > 0
            self.wake.clear()
            if room > 0 and self._fetch(room, 0.0 if busy else FETCH_WAIT):
                busy_wait = BUSY_WAIT_MIN
                continue
            if not self.finished and (busy or room <= 0):
                if self._build_ahead():
                    continue  # something woke it meanwhile, or more to build: look again
                if self.wake.wait(busy_wait if room > 0 else FETCH_WAIT):
                    busy_wait = BUSY_WAIT_MIN
                else:
                    busy_wait = min(busy_wait * 2, FETCH_WAIT)
        self._shutdown()

    def _fetch(self, room: int, timeout: float) -> bool:
        queues = self.pauses.active(self.queues)
        if not queues:  # every queue was cancelled (wait for add_consumer) or is paused
            self.wake.wait(timeout)
            return False
        deliveries = self.broker.fetch(queues, room, consumer=self.spec.consumer_id,
                                       lease=self.lease, timeout=timeout)
        for delivery in deliveries:
            self.held[delivery.id] = delivery
            self.waiting.append(delivery)
        return bool(deliveries)

    def _start_waiting(self) -> None:
        """Dispatch, and let the jobs just submitted start before the loop goes on (to
        the broker, most often: a fetch that does not wait would hold them back a round
        trip on a green pool, :meth:`Pool.let_jobs_start`) -- when they are at least as
        many as those already running: an idle worker's next task (latency) and a
        filling pool (start-up). A busy pool's jobs run at the loop's next wait anyway,
        and yielding on every turn there showed no gain (bench/redis_compare.py, 40,000
        no-ops at c=100: within the noise of the machine)."""
        running = self.pool.running()
        submitted = self._dispatch()
        if submitted and submitted >= running:
            self.pool.let_jobs_start()

    def _dispatch(self) -> int:
        """:meth:`_hand_over`, under :attr:`handover`."""
        with self.handover:
            return self._hand_over()

    def _hand_over(self) -> int:
        """Hand waiting messages to the pool, in order, while it has free slots; how many.

        A *suspect* message (its process died while it ran beside other tasks, so the
        crash could be its fault) runs in a group of at most ``delivery.suspect`` jobs
        in this process, itself included: it waits until few enough run here, and
        while it runs nothing is dispatched past its group. If the process dies then,
        its group is halved (:func:`celeriac.worker.attribution.blame`); a group of 1
        runs alone, and a crash then is its own.
        """
        group = min(self.suspects.values(), default=0)
        submitted = 0
        while (self.waiting and self.pool.free_slots() > 0 and not self.stopping
               and not self._at_task_limit() and (not group or self.unsettled < group)):
            delivery = self.waiting[0]
            if self.may_lose and self.broker.lost([delivery])[0]:
                self._drop_lost(delivery)
                continue
            if delivery.suspect:
                if self.unsettled >= delivery.suspect:
                    return submitted  # wait until few enough run here
                self.suspects[delivery.id] = delivery.suspect
                group = min(group or delivery.suspect, delivery.suspect)
                if delivery.suspect == 1:
                    log.warning("running message %s alone: its worker process died while it "
                                "ran beside other tasks", delivery.id)
            self.waiting.popleft()
            self.unsettled += 1
            self.pool.submit(partial(self._job, delivery, self.ahead.pop(delivery.id, None)))
            submitted += 1
        return submitted

    def _refill(self) -> None:
        """Jobs ended (``Pool.on_free``, called by the gevent pool once per turn of its
        hub, by the asyncio pool once per turn of its jobs thread): give the freed slots
        their next waiting messages now, as the loop would. The loop is mostly in broker
        round trips (settling, fetching) or asleep until a job wakes it, so when a wave
        of tasks ended together the freed slots waited for it, and each wave started
        later and more spread out than the one before (bench/asyncio_compare.py's sleep
        workload). Not on a late turn, as in the loop; nor once the status pipe to the
        supervisor is broken (the loop's next turn also asks the OS whether the
        supervisor lives, a system call kept off this path); nor where a waiting
        message must be checked with the broker before it starts (RabbitMQ: it may have
        been lost with its channel), since this may run on a thread beside the loop's,
        which alone talks to the broker."""
        if (self.waiting and not self.stopping and self.status.connected and not self.may_lose
                and self._on_time()):
            self._dispatch()

    def _on_time(self) -> bool:
        """False on a late turn (see :meth:`run`): nothing starts before the renew."""
        return time.monotonic() - self.last_turn < self.frozen_after

    def _drop_lost(self, delivery: Delivery) -> None:
        """Drop a waiting message whose claim the broker knows is gone (on RabbitMQ: its
        channel died and the server took it back), so it is not run here as well as
        wherever it is delivered next. Handed back uncharged: it never started here."""
        self.broker.requeue([delivery], uncharge=True)  # refused (stale): it only waited
        self.waiting.popleft()
        self.held.pop(delivery.id, None)
        self.ahead.pop(delivery.id, None)
        log.warning("message %s was lost with the broker connection before it started; it "
                    "runs elsewhere", delivery.id)

    # -- remote control (called from the loop, through the pipeline's tick) ---------------
    def set_queues(self, queues: list[str]) -> list[str]:
        """Consume ``queues`` from now on. Messages waiting here from a queue no longer
        consumed go back to the broker at once, uncharged; returns their ids."""
        self.queues = list(queues)
        with self.handover:
            dropped = [d for d in self.waiting if d.queue not in self.queues]
        if dropped:
            self.broker.requeue(dropped, uncharge=True)
            with self.handover:
                for delivery in dropped:
                    self.waiting.remove(delivery)
                    self.held.pop(delivery.id, None)
                    self.ahead.pop(delivery.id, None)
        self.wake.set()
        return [d.id for d in dropped]

    def set_concurrency(self, concurrency: int, prefetch: int) -> None:
        """Run up to ``concurrency`` tasks at once and hold up to ``prefetch`` messages.
        Held messages past a smaller prefetch stay and run: they are not taken back."""
        if concurrency != self.pool.concurrency:
            self.pool.resize(concurrency)
            heap.resize(concurrency)
        self.prefetch = prefetch
        self.wake.set()

    def _at_task_limit(self) -> bool:
        """True when the tasks run plus those under way reach max_tasks: start no more.

        Counting only settled tasks would let a slot that frees before the loop
        settles start one more task than the limit.
        """
        limit = self.spec.max_tasks
        return limit is not None and self.tasks_run + self.unsettled >= limit

    def _build_ahead(self) -> bool:
        """Decode and build the runs of the next waiting messages (up to a pool's worth)
        while the loop would wait, :data:`AHEAD_CHUNK` at a time; True when it stopped
        with more to build or when something woke the loop meanwhile.

        What a message's start costs the pool's thread is then mostly the hooks: a queue
        prefilled with equal tasks runs in waves that end and start together, and the
        next wave's decoding and building done during the current one's run (the
        consumer is idle then) shortens the handover (bench/asyncio_compare.py). Only
        what depends on the message alone is built ahead (:meth:`Executor.ahead`)."""
        waiting, ahead = self.waiting, self.ahead
        if len(ahead) >= min(len(waiting), self.pool.concurrency):
            return False
        with self.handover:
            built = 0
            for delivery in itertools.islice(waiting, self.pool.concurrency):
                if delivery.id in ahead:
                    continue
                ahead[delivery.id] = self.executor.ahead(delivery)
                built += 1
                if built >= AHEAD_CHUNK:
                    return True
        return self.wake.is_set()

    def _job(self, delivery: Delivery, ready: TaskRun | None = None) -> None:
        # Anything but an Outcome (a killed greenlet, an interpreter exit) leaves the
        # message held: it goes back to the broker when the process ends.
        try:
            outcome = self.executor.handle(delivery, ready)
        except Exception as exc:
            # A bug around the task, not in it: deliver the message again later (each
            # delivery is charged, so one that keeps failing ends in the dead letters).
            log.exception("internal error while handling message %s", delivery.id)
            self.pipeline.message_rejected(Rejection(delivery, str(exc), exc, kind="internal"))
            outcome = Outcome(RETRY_LATER, f"internal error: {exc!r}")
        self.finished.append((delivery, outcome))
        self.wake.set()

    def _early_ack(self, delivery: Delivery) -> None:
        self.broker.ack([delivery])

    # -- settling -----------------------------------------------------------------------
    def _settle(self) -> None:
        if not self.finished:
            return
        batch: list[tuple[Delivery, Outcome]] = []
        while self.finished:
            batch.append(self.finished.popleft())
        with self.handover:  # together: a hand-over between the two would pass max_tasks
            self.unsettled -= len(batch)
            self.tasks_run += sum(1 for _, outcome in batch if outcome.ran)
        self.settler.settle(batch)
        with self.handover:
            for delivery, _ in batch:
                self.held.pop(delivery.id, None)
                if self.suspects:
                    self.suspects.pop(delivery.id, None)

    def _renew(self) -> None:
        if not self.held:
            return
        held = list(self.held.values())
        for delivery, ok in zip(held, self.broker.renew(held, self.lease), strict=True):
            if not ok:
                log.warning("lease of message %s was lost; it may run elsewhere", delivery.id)
                with self.handover:
                    if delivery in self.waiting:
                        self.waiting.remove(delivery)
                        self.held.pop(delivery.id, None)
                        self.ahead.pop(delivery.id, None)

    def _orphaned(self) -> bool:
        return os.getppid() != self.spec.parent_pid or not self.status.connected

    def _check_parent(self) -> None:
        if not self.stopping and self._orphaned():
            self.stop("the supervisor is gone")

    def _shutdown(self) -> None:
        log.info("worker process %d stopping: %s", os.getpid(), self.stop_reason)
        with self.handover:
            unstarted = list(self.waiting)
            self.waiting.clear()
            self.ahead.clear()
        if unstarted:
            self.broker.requeue(unstarted, uncharge=True)
            for delivery in unstarted:
                self.held.pop(delivery.id, None)
            log.info("handed back %d unstarted message(s)", len(unstarted))
        next_renew = time.monotonic() + self.lease / 3
        give_up: float | None = None
        next_beat = 0.0
        while not self.pool.join(timeout=FETCH_WAIT * 4):
            self._settle()
            now = time.monotonic()
            if now >= next_renew:
                self._renew()
                next_renew = now + self.lease / 3
            if self._orphaned():
                if give_up is None:
                    give_up = now + self.spec.shutdown_timeout
                if now >= give_up:
                    self._abandon()
                if now >= next_beat:
                    next_beat = now + self._orphan_heartbeat()
        self._settle()
        if give_up is not None:
            self._forget_orphan()

    def _orphan_heartbeat(self) -> float:
        """Keep the node's heartbeat alive while its supervisor is gone and this process
        finishes its running tasks: otherwise a live node would take the node for dead
        three intervals on and release what this process is still running, which would
        run it twice. The record lists only this process's messages (another orphan of
        the node writing its own in between only means fewer are released if both are
        killed: those wait for their leases). Returns the seconds until the next one."""
        interval = float(self.app.conf.worker_heartbeat_interval)
        running = [[d.id, "", "", d.delivery_count, True, d.queue] for d in self.held.values()]
        info = {"orphaned": True, "pid": os.getpid(), "running": len(running),
                "consumers": {self.spec.consumer_id: running}}
        try:
            self.broker.heartbeat(self.spec.node, info, ttl=interval * 3)
        except Exception as exc:
            log.warning("heartbeat for the orphaned node failed: %s", exc)
        return interval

    def _forget_orphan(self) -> None:
        """Everything settled: the node's record goes (another orphan still running
        writes it again at its next beat)."""
        try:
            self.broker.forget_worker(self.spec.node)
        except Exception as exc:
            log.warning("could not remove the orphaned node's heartbeat: %s", exc)

    def _abandon(self) -> NoReturn:
        """Exit at once, running tasks and all: what a cold shutdown would do to them."""
        log.warning("worker process %d: the supervisor is gone and %d task(s) still run after "
                    "the shutdown timeout (%ss); exiting, their messages will be delivered "
                    "again when their leases expire", os.getpid(), self.pool.running(),
                    self.spec.shutdown_timeout)
        os._exit(1)
