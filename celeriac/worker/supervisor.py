"""The supervisor: the process ``celeriac worker`` runs.

It never runs tasks. It starts worker processes as fresh interpreters
(``python -m celeriac.worker.process``: never a fork of a process that imported
the app or opened connections), reads each one's status pipe, and

* replaces a process that died, giving its messages back to the broker at once:
  unstarted ones uncharged, started ones charged a delivery, so a message that
  keeps killing its worker ends in the dead-letter store;
* enforces hard time limits the pool cannot enforce itself (prefork, solo,
  threads), and those a green pool misses because a task blocks its event loop,
  by failing the task with ``TimeLimitExceeded``, acking its message and killing
  the process (its other messages go back uncharged);
* records a heartbeat in the broker for ``celeriac status``, and worker events
  (online, offline, a task blocking the event loop and when it stops) for
  ``celeriac events``;
* on SIGTERM/SIGINT shuts down warm (children finish their running tasks within
  ``shutdown_timeout``); on a second signal, or after the timeout, cold: children
  are killed and everything they held goes back to the broker uncharged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from celeriac.brokers.base import WorkerEvent
from celeriac.exceptions import (
    BrokerError,
    CeleriacError,
    ConfigurationError,
)
from celeriac.fastjson import loads
from celeriac.masking import mask_url
from celeriac.middleware import ACK, Outcome
from celeriac.middleware.base import Pipeline
from celeriac.worker.attribution import Verdicts, blame, held_by
from celeriac.worker.commands import Command, CommandWriter, SetConcurrency, SetQueues, SetTimeLimit, Stop
from celeriac.worker.nodenames import resolve_node
from celeriac.worker.options import PoolGroup, WorkerOptions
from celeriac.worker.run import revoked_record
from celeriac.worker.settle import Settler
from celeriac.worker.spec import ENV_VAR, WorkerSpec
from celeriac.worker.status import (
    Done,
    FollowupsPart,
    Ready,
    Reserved,
    RunningTask,
    Stalled,
    Started,
    StatusReader,
    Terminate,
)

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.pools.base import Pool

log = logging.getLogger("celeriac.supervisor")


def node_pipeline(app: Celeriac) -> Pipeline:
    """The supervisor's hooks: Celery's worker signals, the notice of rate limits not
    enforced, with ``-E`` (``worker_send_task_events``) worker-heartbeat events, and the
    metric rollups only the supervisor can count (``worker_send_metrics``)."""
    from celeriac.middleware.followups import Followups
    from celeriac.middleware.handlers import TaskHandlers
    from celeriac.middleware.ratelimit import RateLimitNotice
    from celeriac.middleware.remote import RemoteControl
    from celeriac.middleware.signals import SignalsMiddleware

    # TaskHandlers and Followups: for the tasks the supervisor ends itself (see
    # Verdicts.after_task; their chords are joined there).
    pipeline = Pipeline([SignalsMiddleware(), Followups(), TaskHandlers(), RemoteControl(),
                         RateLimitNotice()])
    if app.conf.worker_send_task_events:
        from celeriac.middleware.events import NodeEvents

        pipeline.add(NodeEvents())
    if app.conf.worker_send_metrics:
        from celeriac.middleware.metrics import NodeMetrics

        pipeline.add(NodeMetrics())
    return pipeline


def _joined(parts: list[str] | None) -> dict[str, Any] | None:
    """A task's follow-ups from the parts its process wrote (see ``FollowupsPart``)."""
    if not parts:
        return None
    try:
        value = loads("".join(parts))
    except ValueError:
        log.warning("ignoring malformed follow-ups from a worker process")
        return None
    return value if isinstance(value, dict) else None


def node_settle_pipeline(app: Celeriac) -> Pipeline:
    """What the supervisor's own settling runs: result storage, as a worker process's does."""
    from celeriac.middleware.results import ResultStore

    return Pipeline([ResultStore(app.backend)])


#: Seconds the supervisor waits between looks when nothing happens.
TICK = 0.1
#: Seconds the supervisor lets status lines gather after a turn that read some. A busy
#: process writes a line per task; waking for each one cost the supervisor more CPU than
#: everything else it does, while nothing it does needs it sooner than this (a pipe holds
#: 64 KiB, hundreds of lines).
GATHER = 0.01
#: Extra seconds past a hard limit before the supervisor kills, for pools that
#: enforce the limit themselves (their own kill should come first).
HARD_LIMIT_GRACE = 1.0
#: Extra seconds past a hard limit before the supervisor kills, for a task its process
#: ends at the limit itself (``Started.limit_in_process``: an ``async def`` task, whose
#: slot throws the limit into the coroutine and gives it ``celeriac.aio.await_.UNWIND``
#: seconds to unwind): enough for that, and for the failure to be stored and acked.
ASYNC_LIMIT_GRACE = 2.0
#: A process that dies sooner than this after starting counts as a crash loop.
QUICK_DEATH = 2.0
#: Longest pause between restarts of a crash-looping process.
MAX_BACKOFF = 10.0
#: Seconds a supervisor's broker call waits out a lost connection (see Broker.retry_for).
SUPERVISOR_PATIENCE = 2.0


@dataclass(frozen=True, eq=False)
class _Group:
    """A pool group with its pool class and process layout resolved."""

    spec: PoolGroup
    pool_class: type[Pool]
    processes: int
    per_process: int

    @property
    def size(self) -> int:
        """What ``pool_grow``/``pool_shrink`` and ``--autoscale`` change: slots per process
        for pools that resize in place (threads, green), processes for the others."""
        return self.per_process if self.pool_class.resizable else self.processes

    def describe(self) -> str:
        return (f"{self.spec.pool} {self.processes}x{self.per_process} on "
                f"{','.join(self.spec.queues)}")


@dataclass
class Child:
    """One worker process as the supervisor knows it."""

    index: int
    group: _Group
    consumer_id: str
    proc: subprocess.Popen[bytes]
    reader: StatusReader
    started_at: float
    running: dict[str, RunningTask] = field(default_factory=dict)
    ready: bool = False
    processed: int = 0
    #: Set when the supervisor killed it on purpose (time limit, cold shutdown).
    killed_for: str = ""
    #: Delivery id of the task blocking its event loop right now (a green hub, an asyncio loop).
    blocker: str | None = None
    #: Delivery ids charged a delivery although the kill was on purpose.
    charged: list[str] = field(default_factory=list)
    #: The supervisor's end of its command pipe (remote control).
    commands: CommandWriter | None = None
    #: Answers to ``ReportReserved`` not yet collected (by the remote-control middleware).
    answers: list[Reserved] = field(default_factory=list)
    #: Parts of follow-ups received for tasks whose start has not been read yet.
    followups: dict[str, list[str]] = field(default_factory=dict)


class Supervisor:
    """Starts, watches and replaces the worker processes of one node."""

    def __init__(self, app: Celeriac, options: WorkerOptions) -> None:
        from celeriac.pools import get_pool

        if getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", "") == (
                "celeriac.worker.process"):
            # Importing the app started a worker: each worker process would start another.
            raise ConfigurationError(
                "a worker was started while a worker process imported the app; call "
                "app.worker_main() under 'if __name__ == \"__main__\":'")
        self.app = app
        self.options = options
        #: Process index -> its group; a node runs each group's processes side by side.
        #: ``pool_grow``/``pool_shrink`` add and remove indexes (never reused).
        self.slots: dict[int, _Group] = {}
        for spec in options.groups:
            pool_class = get_pool(spec.pool)
            processes, per_process = pool_class.layout(spec.concurrency, spec.processes)
            group = _Group(spec, pool_class, processes, per_process)
            for _ in range(processes):
                self.slots[len(self.slots)] = group
        self.groups = list(dict.fromkeys(self.slots.values()))
        self._next_index = len(self.slots)
        #: Task name -> (soft, hard) set by ``celeriac control time_limit``.
        self.time_limits: dict[str, tuple[float | None, float | None]] = {}
        #: Task name -> tasks started since the node started (``inspect stats``' total).
        self.totals: Counter[str] = Counter()
        self.node = resolve_node(options.node)
        self.children: dict[int, Child] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.cold = False
        self.stop_deadline = 0.0
        self.backoff: dict[int, float] = {}
        self.restart_at: dict[int, float] = {}
        self.processed = 0
        self.started_at = time.time()
        self._next_heartbeat = 0.0
        self.announced = False
        #: Task name -> times it blocked a green event loop (shown by ``celeriac status``).
        self.stalls: dict[str, int] = {}
        #: The node's hooks (signals such as worker_init, worker_ready, heartbeat_sent).
        self.pipeline = node_pipeline(app)
        if options.autoscale is not None:
            from celeriac.worker.autoscale import Autoscaler

            self.pipeline.add(Autoscaler(*options.autoscale,
                                         keepalive=float(app.conf.worker_autoscale_keepalive)))
        #: Settles and runs the hooks of what the supervisor ends itself (a hard limit, a
        #: terminate, a crash on a last delivery) and releases what vanished nodes held.
        self.verdicts = Verdicts(app, self.pipeline, Settler(app.broker, node_settle_pipeline(app)))
        #: time.monotonic() of the last heartbeat that succeeded, and of the first of the
        #: unbroken run of them it ends (a gap of a ttl or more starts a new run).
        self._last_beat = float("-inf")
        self._beating_since = float("-inf")
        #: Seconds the latest worker process took from its start to ready (crash attribution
        #: weighs it against how long tasks run: see attribution.suspect_group).
        self.restart_seconds = 1.0
        #: Task name -> how long its runs take, a moving average (crash attribution).
        self.durations: dict[str, float] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGQUIT, self._on_cold)
        # A broker call must not hold up the watch over the children for long; what
        # fails here (heartbeats, releases) is logged and made good by leases.
        self.app.broker.retry_for(SUPERVISOR_PATIENCE)
        self.pipeline.node_starting(self)
        log.info("%s: %s; broker %s", self.node,
                 "; ".join(group.describe() for group in self.groups),
                 mask_url(self.app.conf.broker_url))
        self._emit("worker-online", hostname=socket.gethostname(), pid=os.getpid(),
                   pools=[g.spec.pool for g in self.groups])
        for index in list(self.slots):
            if not self.stopping:  # a TERM while starting: a process started now would never hear it
                self._spawn(index)
        while self.children or not self.stopping:
            self._tick()
        try:
            self.app.broker.forget_worker(self.node)
        except BrokerError as exc:
            log.warning("could not remove this node's heartbeat: %s", exc)
        self._emit("worker-offline", processed=self.processed, cold=self.cold)
        self.pipeline.node_stopped(self)
        log.info("%s: stopped", self.node)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            self._on_cold(signum, frame)
            return
        self.shutdown(signal.Signals(signum).name, "signal again for cold")

    def shutdown(self, signal_name: str = "SIGTERM", hint: str = "") -> None:
        """Begin a warm shutdown: on SIGTERM/SIGINT, or ``celeriac control shutdown``."""
        if self.stopping:
            return
        log.info("warm shutdown: running tasks get %ss to finish%s",
                 self.options.shutdown_timeout, f" ({hint})" if hint else "")
        self.pipeline.node_stopping(self, signal_name, "Warm")
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.options.shutdown_timeout
        for child in self.children.values():
            self._signal(child, signal.SIGTERM)
            # Also down its command pipe: a process between fork and exec takes the signal
            # with this process's handler and loses it at exec; the pipe keeps the request
            # until the process reads it (seen: a TERM right after start waited out the
            # whole shutdown timeout).
            self.send(child, Stop("warm shutdown requested"))

    def _on_cold(self, signum: int, frame: FrameType | None) -> None:
        log.warning("cold shutdown: killing worker processes; their messages go back to the queue")
        if not self.cold:
            self.pipeline.node_stopping(self, signal.Signals(signum).name, "Cold")
        self.stopping = True
        self.cold = True

    # -- one turn of the loop -------------------------------------------------------------
    def _tick(self) -> None:
        ready = self.selector.select(TICK)
        for key, _ in ready:
            self._read(key.data)
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.proc.poll() is not None:
                self._read(child)
                self._reap(child)
            elif self.cold or (self.stopping and now >= self.stop_deadline):
                self._kill(child, "shutdown timeout" if not self.cold else "cold shutdown")
            else:
                self._enforce_time_limits(child, now)
        if not self.stopping:
            for index, when in list(self.restart_at.items()):
                if now >= when:
                    del self.restart_at[index]
                    if index in self.slots:
                        self._spawn(index)
            self._heartbeat()
        self.pipeline.node_tick(self)
        if ready and not self.stopping:
            time.sleep(GATHER)

    def _read(self, child: Child) -> None:
        events, _ = child.reader.read()
        for event in events:
            if isinstance(event, Started):
                grace = (ASYNC_LIMIT_GRACE if event.limit_in_process else HARD_LIMIT_GRACE
                         if child.group.pool_class.enforces_hard_limit else 0.0)
                hard = event.hard_limit
                child.running[event.delivery_id] = RunningTask(
                    delivery_id=event.delivery_id, token=event.token, queue=event.queue,
                    delivery_count=event.delivery_count, task_id=event.task_id, name=event.name,
                    ignore_result=event.ignore_result, started_at=time.time(),
                    argsrepr=event.argsrepr, kwargsrepr=event.kwargsrepr, isolated=event.isolated,
                    deadline=time.monotonic() + hard + grace if hard else None,
                    followups=_joined(child.followups.pop(event.delivery_id, None)))
                self.totals[event.name] += 1
            elif isinstance(event, FollowupsPart):
                child.followups.setdefault(event.delivery_id, []).append(event.part)
            elif isinstance(event, Done):
                now = time.time()
                durations = self.durations
                for delivery_id in event.delivery_ids:
                    task = child.running.pop(delivery_id, None)
                    if task is not None:
                        child.processed += 1
                        self.processed += 1
                        took = now - task.started_at
                        last = durations.get(task.name, took)
                        durations[task.name] = last + (took - last) * 0.2
            elif isinstance(event, Stalled):
                self._on_stall(child, event)
            elif isinstance(event, Ready):
                self._on_ready(child)
            elif isinstance(event, Terminate):
                self._terminate(child, event)
            elif isinstance(event, Reserved):
                child.answers.append(event)

    def _terminate(self, child: Child, event: Terminate) -> None:
        """A task revoked with terminate=True that its process cannot stop alone: fail it as
        REVOKED, ack it, and replace the process (its other messages go back uncharged)."""
        task = child.running.pop(event.delivery_id, None)
        if task is None:
            return  # it finished meanwhile
        record = None if task.ignore_result else revoked_record(task.task_id, task.name,
                                                                "terminated")
        try:
            self.verdicts.settler.settle([(task.delivery(), Outcome(ACK, ran=True, record=record))])
        except CeleriacError as exc:
            log.error("could not settle terminated task %s[%s]: %s; it will be delivered again",
                      task.name, task.task_id, exc)
        log.warning("task %s[%s] revoked with terminate (%s): replacing worker process %d "
                    "(with SIGKILL: a worker process takes SIGTERM as a warm shutdown)",
                    task.name, task.task_id, event.signal, child.proc.pid)
        self._kill(child, f"replaced to terminate task {task.name}[{task.task_id}]")
        self.verdicts.after_task(task, record or revoked_record(task.task_id, task.name, "terminated"),
                              revoked="terminated", signal=event.signal)

    def _on_ready(self, child: Child) -> None:
        child.ready = True
        self.restart_seconds = time.monotonic() - child.started_at
        self.backoff.pop(child.index, None)
        log.debug("worker process %d (pid %d) ready", child.index, child.proc.pid)
        if not self.announced and len(self.children) == len(self.slots) and all(
                c.ready for c in self.children.values()):
            self.announced = True
            log.info("%s: all worker processes ready", self.node)
            self.pipeline.node_ready(self)

    def _on_stall(self, child: Child, event: Stalled) -> None:
        """A process reported an event loop blocked (start) or free again (end): a green
        pool's hub, or the asyncio loop its async tasks run on (any pool)."""
        name = event.task or "<no task>"
        what = f"task {name}[{event.task_id}]" if event.task else "code outside any task"
        task = {"task": event.task or None, "id": event.task_id or None, "pid": child.proc.pid}
        if event.ended:
            child.blocker = None
            log.warning("%s blocked the event loop of worker process %d for %.3fs", what,
                        child.proc.pid, event.seconds)
            self._emit("task-unblocked", **task, seconds=event.seconds)
            return
        child.blocker = event.delivery_id
        self.stalls[name] = self.stalls.get(name, 0) + 1
        stack = event.stack.rstrip()
        log.warning("%s is blocking the event loop of worker process %d (all its other tasks "
                    "wait); blocking call:\n%s", what, child.proc.pid, stack)
        self._emit("task-blocked", **task, stack=stack)

    def _enforce_time_limits(self, child: Child, now: float) -> None:
        late = [t for t in child.running.values() if t.deadline is not None and now >= t.deadline]
        if not late:
            return
        reason = "hard time limit"
        if child.group.pool_class.enforces_hard_limit:
            # A green pool missed a limit it enforces itself: its event loop is blocked.
            # Only the task that blocks it is to blame (when the pool named it).
            reason = "killed: event loop blocked past a hard time limit"
            blocker = child.running.get(child.blocker or "")
            late = [blocker] if blocker is not None else late
        for task in late:
            self.verdicts.overran(child, task)
        self._kill(child, reason)

    # -- processes ------------------------------------------------------------------------
    def prefetch(self, group: _Group) -> int:
        """Most messages one process of ``group`` holds at once.

        With several processes, one that reserved more than it can start would sit on
        messages its idle siblings could run now (a burst of 4 tasks on prefork -c 4
        would run one after another in one process): only a lone process prefetches.
        Under ``--autoscale`` none does: what the pool cannot start yet waits in the broker,
        where the autoscaler counts it (see celeriac.worker.autoscale).
        """
        lone = group.processes == 1 and self.options.autoscale is None
        per_slot = self.options.prefetch_multiplier if lone else 1
        return group.per_process * per_slot

    def _spawn(self, index: int) -> None:
        read_fd, write_fd = os.pipe()
        command_read, command_write = os.pipe()
        group = self.slots[index]
        spec = WorkerSpec(
            app=self.options.app, pool=group.spec.pool, concurrency=group.per_process,
            queues=group.spec.queues, prefetch=self.prefetch(group),
            consumer_id=f"{self.node}/{index}/{uuid.uuid4().hex[:12]}", node=self.node,
            index=index, status_fd=write_fd, parent_pid=os.getpid(),
            max_tasks=self.options.max_tasks_per_child,
            max_memory_kb=self.options.max_memory_per_child,
            shutdown_timeout=self.options.shutdown_timeout, loglevel=self.options.loglevel,
            settings=self.options.settings, workdir=os.getcwd(), command_fd=command_read,
            time_limits={name: list(limits) for name, limits in self.time_limits.items()},
            logfile=self.options.logfile)
        env = dict(os.environ, **{ENV_VAR: spec.to_env()})
        proc = subprocess.Popen([sys.executable, "-m", "celeriac.worker.process"],
                                env=env, pass_fds=(write_fd, command_read), close_fds=True)
        os.close(write_fd)
        os.close(command_read)
        child = Child(index=index, group=group, consumer_id=spec.consumer_id, proc=proc,
                      reader=StatusReader(read_fd), started_at=time.monotonic(),
                      commands=CommandWriter(command_write))
        self.children[index] = child
        self.selector.register(read_fd, selectors.EVENT_READ, child)
        log.debug("started worker process %d (pid %d)", index, proc.pid)

    def _signal(self, child: Child, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signum)

    def _kill(self, child: Child, reason: str) -> None:
        child.killed_for = reason
        self._signal(child, signal.SIGKILL)
        child.proc.wait()
        self._reap(child)

    def _reap(self, child: Child) -> None:
        if self.children.get(child.index) is not child:
            return
        del self.children[child.index]
        self.selector.unregister(child.reader.fd)
        child.reader.close()
        if child.commands is not None:
            child.commands.close()
        code = child.proc.returncode
        # A kill we did on purpose charges nobody but what it names (a task back to the
        # queue at its hard limit); a crash is blamed by attribution.blame.
        started, suspects, group = ((tuple(child.charged), (), 0) if child.killed_for
                                    else blame(child, self.restart_seconds, self.durations))
        try:
            released = self.app.broker.release_consumer(child.consumer_id, started=started,
                                                        suspects=suspects, group=group)
        except BrokerError as exc:
            # Nothing is lost: the messages come back when their leases run out.
            log.error("could not release the messages of worker process %d: %s; they will be "
                      "delivered again when their leases expire", child.index, exc)
            released = 0
        if started:
            self.verdicts.fail_spent(child.running.values(), started)
        if code == 0 and not child.killed_for:
            log.info("worker process %d (pid %d) exited", child.index, child.proc.pid)
        else:
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            what = child.killed_for or f"died with {how}"
            running = ", ".join(f"{t.name}[{t.task_id}]" for t in child.running.values())
            log.error("worker process %d (pid %d) %s%s; %d message(s) released", child.index,
                      child.proc.pid, what, f" while running {running}" if running else "",
                      released)
            if suspects:
                log.warning("which of its %d running tasks killed worker process %d is not "
                            "known: they go back uncharged, marked suspect, and %s",
                            len(suspects), child.index, "each runs alone next time"
                            if group <= 1 else f"run next in groups of at most {group}")
        if not self.stopping and child.index in self.slots:
            self._schedule_restart(child)

    def _schedule_restart(self, child: Child) -> None:
        """Start a replacement: at once, or after a doubling pause if the process keeps
        dying at start-up or soon after with nothing running (a broken import, a missing
        resource: restarting at once would spin). A process that died running tasks is
        replaced at once, however young: crash attribution already bounds how often a
        task may kill its process (it ends in the dead letters), and a pause would only
        hold up the innocent tasks waiting behind it."""
        delay = 0.0
        quick = time.monotonic() - child.started_at < QUICK_DEATH
        if not child.ready or (quick and not child.running):
            delay = min(MAX_BACKOFF, self.backoff.get(child.index, 0.25) * 2)
            self.backoff[child.index] = delay
            if not child.ready:
                log.warning("worker process %d failed to start; retrying in %.1fs",
                            child.index, delay)
        self.restart_at[child.index] = time.monotonic() + delay

    # -- remote control: celeriac.middleware.remote decides, these carry it out -----------
    def send(self, child: Child, command: Command) -> None:
        """Send ``command`` down ``child``'s command pipe (never blocks)."""
        if child.commands is not None:
            child.commands.send(command)

    def set_time_limit(self, task: str, soft: float | None, hard: float | None) -> None:
        """Run ``task`` under these limits in every process, now and in those started later."""
        self.time_limits[task] = (soft, hard)
        for child in self.children.values():
            self.send(child, SetTimeLimit(task, soft, hard))

    def change_group(self, group: _Group, *, queues: list[str] | None = None,
                     per_process: int | None = None, processes: int | None = None) -> _Group:
        """Put a copy of ``group`` with other queues or sizes in its place; return it.

        Its running processes are told at once; processes are started, or stopped
        warm (the newest first), to make ``processes``; and every process started
        from now on gets the new values, so a replaced process loses nothing.
        """
        spec = group.spec if queues is None else replace(group.spec, queues=list(queues))
        new = _Group(spec, group.pool_class, group.processes if processes is None else processes,
                     group.per_process if per_process is None else per_process)
        self.groups = [new if g is group else g for g in self.groups]
        indexes = sorted(i for i, g in self.slots.items() if g is group)
        for index in indexes:
            self.slots[index] = new
        resized = (new.per_process, self.prefetch(new)) != (group.per_process,
                                                          self.prefetch(group))
        for child in self.children.values():
            if child.group is group:
                child.group = new
                if queues is not None:
                    self.send(child, SetQueues(tuple(spec.queues)))
                if resized:
                    self.send(child, SetConcurrency(new.per_process, self.prefetch(new)))
        for index in indexes[new.processes:]:
            self._retire(index)
        for _ in range(new.processes - len(indexes)):
            index, self._next_index = self._next_index, self._next_index + 1
            self.slots[index] = new
            if not self.stopping:
                self._spawn(index)
        return new

    def resize(self, group: _Group, size: int) -> _Group:
        """Make ``group``'s :attr:`_Group.size` ``size``; return the group that replaces it."""
        if group.pool_class.resizable:
            return self.change_group(group, per_process=size)
        return self.change_group(group, processes=size)

    def _retire(self, index: int) -> None:
        """Stop the process at ``index`` warm for good (the pool shrank): it is not replaced."""
        del self.slots[index]
        self.restart_at.pop(index, None)
        self.backoff.pop(index, None)
        child = self.children.get(index)
        if child is not None:
            self.send(child, Stop("the pool shrank"))

    # -- heartbeat and events -------------------------------------------------------------
    def _emit(self, kind: str, **data: Any) -> None:
        """Record a worker event in the broker (``celeriac events``); a failure is only logged."""
        event = WorkerEvent(type=kind, worker=self.node, data=data, time=time.time())
        try:
            self.app.broker.emit([event])
        except Exception as exc:
            log.warning("could not record %s event: %s", kind, exc)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        interval = float(self.app.conf.worker_heartbeat_interval)
        self._next_heartbeat = now + interval
        info = {
            "hostname": socket.gethostname(), "pid": os.getpid(),
            "pool": "+".join(g.spec.pool for g in self.groups),
            "processes": len(self.slots),
            "concurrency": sum(g.processes * g.per_process for g in self.groups),
            "queues": sorted({q for g in self.groups for q in g.spec.queues}),
            "pools": [{"pool": g.spec.pool, "processes": g.processes,
                       "concurrency": g.per_process, "queues": g.spec.queues}
                      for g in self.groups],
            "started": self.started_at,
            "processed": self.processed,
            "running": sum(len(c.running) for c in self.children.values()),
            "children": [c.proc.pid for c in self.children.values()],
            "stalls": dict(self.stalls),
            "consumers": held_by((c.consumer_id, c.running.values())
                                 for c in self.children.values()),
        }
        ttl = interval * 3
        try:
            self.app.broker.heartbeat(self.node, info, ttl=ttl)
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)
            return
        if now - self._last_beat >= ttl:
            # First beat, or the first after a lapse (this node was frozen or could not
            # reach the broker): our view may be as stale as the others' records.
            self._beating_since = now
        elif now - self._beating_since >= ttl:
            # Reap only after beating for a whole ttl: after an outage of the broker,
            # every node's record may have expired, and the others need a beat to renew
            # theirs before anyone takes them for dead.
            try:
                self.verdicts.reap_vanished(self.node)
            except BrokerError as exc:
                log.warning("could not look for vanished nodes: %s", exc)
        self._last_beat = now
        self.pipeline.heartbeat(self, info)
