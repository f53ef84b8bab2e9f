"""Remote control on a worker node: the supervisor's side of ``celeriac inspect`` and
``celeriac control`` (the client is :mod:`celeriac.control`).

On the node's turns (``node_tick``) a few times per second this middleware reads the
broker's control stream from where it left off (:meth:`Broker.commands`), keeps the
commands meant for this node (no destination, or one naming it) that have not
expired, runs them and, when the sender waits, answers ``{node: reply}`` into the
command's reply box. It starts reading after the node's first heartbeat, at the
newest command then (:meth:`Broker.command_cursor`): older commands are never run,
and a client that sees no heartbeat of a node knows that node will not answer
(:mod:`celeriac.control` stops waiting once every live node answered).

The supervisor answers from what it knows: the running tasks (from the status
pipe), its pool groups, settings, task registry and counters, and the broker's
revocations. What only a worker process knows or can do goes down the command
pipe (:mod:`celeriac.worker.commands`): the messages it holds but has not
started (answered back on the status pipe), new queues, a new concurrency, new
time limits. The supervisor keeps each change as state too, so a process
started later (a replacement, a new prefork process) gets it from its spec.

A command that cannot be read (not an object, no command name, a malformed
destination) is skipped with one log line; a command this node cannot run is
answered ``{"error": ...}``. Nothing a sender puts in the stream stops the node.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac.brokers.base import ControlCommand
from celeriac.control import ALIASES, ControlMessage
from celeriac.exceptions import BrokerError, ConfigurationError
from celeriac.masking import mask_settings, mask_url
from celeriac.middleware.base import Middleware
from celeriac.task_options import parse_rate_limit
from celeriac.worker.autoscale import Autoscaler
from celeriac.worker.commands import ReportReserved, SetRateLimit

if TYPE_CHECKING:
    from celeriac.worker.status import RunningTask
    from celeriac.worker.supervisor import Child, Supervisor

log = logging.getLogger("celeriac.supervisor")

#: Seconds between two reads of the control stream.
POLL_INTERVAL = 0.25
#: Seconds between reads while the broker fails (one log line per failure streak).
POLL_BACKOFF = 2.0
#: Longest wait for the worker processes' answers to ``reserved``.
RESERVED_WAIT = 1.0
#: Seconds a reply box nobody collects is kept (Broker.reply's ttl).
REPLY_TTL = 60.0
#: Revocations listed by ``revoked`` at most.
REVOKED_LIMIT = 100_000
#: ``getrusage`` fields, in Celery's ``stats`` order.
RUSAGE_FIELDS = ("utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt",
                 "nswap", "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw",
                 "nivcsw")


class Refused(Exception):
    """A command this node will not run; the message is the reply's ``error``."""


@dataclass
class _Pending:
    """A ``reserved`` or ``query_task`` command waiting for its worker processes' answers."""

    message: ControlMessage
    request: int
    deadline: float
    #: Process index -> the child still to answer.
    waiting: dict[int, Child]
    tasks: list[dict[str, Any]] = field(default_factory=list)
    #: ``query_task``: the ids asked for, and what was found running (``{id: [state, info]}``).
    ids: frozenset[str] | None = None
    found: dict[str, list[Any]] = field(default_factory=dict)

    def reply(self) -> Any:
        """``reserved``: the held messages; ``query_task``: those asked for, by id, with
        their state."""
        if self.ids is None:
            return self.tasks
        held = {task["id"]: ["reserved", task] for task in self.tasks if task.get("id") in self.ids}
        return {**held, **self.found}


#: What a handler returns to say "the reply comes later" (``reserved``).
LATER = object()

Handler = Callable[["RemoteControl", "Supervisor", ControlMessage], Any]


class RemoteControl(Middleware):
    """Follows the broker's control stream and runs this node's commands."""

    def __init__(self) -> None:
        #: The seq of the last command seen; None until the first heartbeat.
        self.cursor: int | None = None
        self._next_poll = 0.0
        self._failing = False
        self._requests = 0
        self._pending: list[_Pending] = []

    # -- hooks ---------------------------------------------------------------------------
    def heartbeat(self, supervisor: Supervisor, info: dict[str, Any]) -> None:
        if self.cursor is None:
            self.cursor = supervisor.app.broker.command_cursor()

    def node_tick(self, supervisor: Supervisor) -> None:
        for child in supervisor.children.values():
            if child.commands is not None and child.commands.pending:
                child.commands.flush()
        if self._pending:
            self._collect_reserved(supervisor)
        now = time.monotonic()
        if self.cursor is None or now < self._next_poll:
            return
        self._next_poll = now + POLL_INTERVAL
        try:
            commands = supervisor.app.broker.commands(after=self.cursor)
        except BrokerError as exc:
            if not self._failing:
                log.warning("cannot read remote-control commands: %s; retrying every %ss",
                            exc, POLL_BACKOFF)
            self._failing = True
            self._next_poll = now + POLL_BACKOFF
            return
        self._failing = False
        for command in commands:
            self.cursor = command.seq
            self._handle(supervisor, command)

    # -- one command ---------------------------------------------------------------------
    def _handle(self, supervisor: Supervisor, command: ControlCommand) -> None:
        try:
            message = ControlMessage.from_body(command.body)
        except ValueError as exc:
            log.warning("skipping malformed remote-control command #%d: %s", command.seq, exc)
            return
        if message.destination is not None and supervisor.node not in message.destination:
            return
        if message.expires is not None and time.time() > message.expires:
            log.info("remote-control command %r #%d expired before this node read it; not run",
                     message.command, command.seq)
            return
        name = ALIASES.get(message.command, message.command)
        handler = HANDLERS.get(name)
        try:
            if handler is None:
                raise Refused(f"unknown remote-control command {message.command!r}")
            result = handler(self, supervisor, message)
        except Refused as exc:
            log.warning("remote-control command %r refused: %s", message.command, exc)
            result = {"error": str(exc)}
        if result is not LATER:
            self._reply(supervisor, message, result)

    def _reply(self, supervisor: Supervisor, message: ControlMessage, result: Any) -> None:
        if message.reply_to is None:
            return
        try:
            supervisor.app.broker.reply(message.reply_to, {supervisor.node: result},
                                        ttl=REPLY_TTL)
        except BrokerError as exc:
            log.warning("could not reply to remote-control command %r: %s", message.command, exc)

    # -- inspect -------------------------------------------------------------------------
    def ping(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        return {"ok": "pong"}

    def active(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        return [self._task_info(supervisor, child, task)
                for child in supervisor.children.values() for task in child.running.values()]

    @staticmethod
    def _task_info(supervisor: Supervisor, child: Child, task: RunningTask) -> dict[str, Any]:
        """A running task as Celery's ``Request.info()`` shows it (args are the reprs)."""
        registered = supervisor.app.tasks.get(task.name)
        return {
            "id": task.task_id, "name": task.name, "args": task.argsrepr,
            "kwargs": task.kwargsrepr, "type": task.name, "hostname": supervisor.node,
            "time_start": task.started_at,
            "acknowledged": registered is not None and not registered.acks_late,
            "delivery_info": {"routing_key": task.queue,
                              "redelivered": task.delivery_count > 1},
            "worker_pid": child.proc.pid,
        }

    def reserved(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        return self._ask_processes(supervisor, _Pending(message, 0, 0.0, {}))

    def query_task(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        """``{task id: [state, info]}`` for the asked ids this node holds: ``active``
        (running) or ``reserved`` (held by a process, not started). Never ``scheduled``:
        eta tasks wait in the broker."""
        ids = _ids(message.arguments.get("ids"))
        found = {task.task_id: ["active", self._task_info(supervisor, child, task)]
                 for child in supervisor.children.values() for task in child.running.values()
                 if task.task_id in ids}
        return self._ask_processes(supervisor, _Pending(message, 0, 0.0, {}, ids=ids,
                                                        found=found))

    def _ask_processes(self, supervisor: Supervisor, pending: _Pending) -> Any:
        """Ask every ready process for the messages it holds; the reply goes when all
        answered or after ``RESERVED_WAIT``."""
        children = {index: child for index, child in supervisor.children.items()
                    if child.ready and child.commands is not None and child.commands.connected}
        if not children:
            return pending.reply()
        self._requests += 1
        for child in children.values():
            supervisor.send(child, ReportReserved(self._requests))
        pending.request, pending.waiting = self._requests, children
        pending.deadline = time.monotonic() + RESERVED_WAIT
        self._pending.append(pending)
        return LATER

    def _collect_reserved(self, supervisor: Supervisor) -> None:
        by_request = {pending.request: pending for pending in self._pending}
        for index, child in supervisor.children.items():
            answers, child.answers = child.answers, []
            for answer in answers:
                pending = by_request.get(answer.request)
                if pending is not None and index in pending.waiting:
                    pending.tasks.extend(answer.tasks)
                    if answer.last:
                        del pending.waiting[index]
        now = time.monotonic()
        for pending in list(self._pending):
            for index, child in list(pending.waiting.items()):
                if supervisor.children.get(index) is not child:
                    del pending.waiting[index]  # it exited: it holds nothing any more
            if pending.waiting and now < pending.deadline:
                continue
            if pending.waiting:
                log.info("inspect %s: %d worker process(es) did not answer within %ss",
                         pending.message.command, len(pending.waiting), RESERVED_WAIT)
            self._pending.remove(pending)
            self._reply(supervisor, pending.message, pending.reply())

    def scheduled(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        # Celery's worker holds ETA tasks in memory; celeriac's never does: they wait in
        # the broker until due and are fetched only then. So this node holds none.
        return []

    def report(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        """``{"ok": text}``: what ``celeriac report`` prints, as this node sees it."""
        return {"ok": supervisor.app.bugreport()}

    def stats(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        conf = supervisor.app.conf
        children = list(supervisor.children.values())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        scaler = supervisor.pipeline.find(Autoscaler)
        return {
            "pid": os.getpid(),
            "uptime": int(time.time() - supervisor.started_at),
            "pool": {
                "implementation": "+".join(g.spec.pool for g in supervisor.groups),
                "max-concurrency": sum(g.processes * g.per_process for g in supervisor.groups),
                "processes": [child.proc.pid for child in children],
                "max-tasks-per-child": supervisor.options.max_tasks_per_child,
                "timeouts": [conf.task_soft_time_limit, conf.task_time_limit],
                "groups": [{"pool": g.spec.pool, "processes": g.processes,
                            "concurrency": g.per_process, "queues": list(g.spec.queues)}
                           for g in supervisor.groups],
            },
            "prefetch_count": sum(supervisor.prefetch(child.group) for child in children),
            "total": dict(supervisor.totals),
            "processed": supervisor.processed,
            "broker": {"url": mask_url(str(conf.broker_url)),
                       "transport": str(conf.broker_url).partition(":")[0]},
            "rusage": {name: getattr(usage, f"ru_{name}") for name in RUSAGE_FIELDS},
            **({"autoscaler": scaler.info(supervisor)} if scaler is not None else {}),
        }

    def registered(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        args = message.arguments
        items = args.get("taskinfoitems") or []
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise Refused(f"taskinfoitems must be attribute names, got {items!r:.100}")
        tasks = supervisor.app.tasks
        names = sorted(n for n in tasks
                       if args.get("builtins") or not n.startswith(("celeriac.", "celery.")))
        if not items:
            return names
        described = []
        for name in names:
            values = [(item, getattr(tasks[name], item, None)) for item in items]
            shown = " ".join(f"{item}={value}" for item, value in values if value is not None)
            described.append(f"{name} [{shown}]" if shown else name)
        return described

    def revoked(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        broker = supervisor.app.broker
        ids: dict[str, None] = {}
        after = 0
        while len(ids) < REVOKED_LIMIT:
            batch = broker.revocations(after=after, limit=1000)
            ids.update((revocation.task_id, None) for revocation in batch)
            if len(batch) < 1000:
                break
            after = batch[-1].seq
        return list(ids)

    def active_queues(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        pools: dict[str, list[str]] = {}
        for group in supervisor.groups:
            for queue in group.spec.queues:
                pools.setdefault(queue, []).append(group.spec.pool)
        return [{"name": queue, "routing_key": queue, "exclusive": False, "auto_delete": False,
                 "no_ack": False, "pools": served} for queue, served in pools.items()]

    def conf(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        conf = supervisor.app.conf
        given = supervisor.options.settings
        wanted = message.arguments.get("with_defaults")
        with_defaults = wanted is True or str(wanted).lower() in {"1", "true", "yes", "on"}
        values = {name: given.get(name, conf[name]) for name in conf
                  if with_defaults or conf.is_set(name) or name in given}
        return mask_settings(values)

    # -- control -------------------------------------------------------------------------
    def shutdown(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        if supervisor.stopping:
            return {"ok": "already shutting down"}
        supervisor.shutdown("SIGTERM", "asked by celeriac control shutdown")
        return {"ok": f"warm shutdown: running tasks get "
                      f"{supervisor.options.shutdown_timeout}s to finish"}

    def rate_limit(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        """The client stored the limit in the broker (it is cluster-wide); this node's
        processes are told at once, and a process started later reads it from there."""
        task = message.arguments.get("task_name")
        rate = message.arguments.get("rate_limit")
        if not isinstance(task, str) or task not in supervisor.app.tasks:
            raise Refused("unknown task")
        try:
            per_second = parse_rate_limit(rate)
        except ConfigurationError as exc:
            raise Refused(f"Invalid rate limit string: {exc}") from None
        if supervisor.app.conf.worker_disable_rate_limits:
            return {"ok": "rate limits are disabled on this node (worker_disable_rate_limits)"}
        for child in supervisor.children.values():
            supervisor.send(child, SetRateLimit(task, "0" if per_second is None else str(rate)))
        if per_second is None:
            log.info("rate limits disabled for tasks of type %s", task)
            return {"ok": "rate limit disabled successfully"}
        log.info("new rate limit for tasks of type %s: %s", task, rate)
        return {"ok": "new rate limit set successfully"}

    def time_limit(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        task = message.arguments.get("task_name")
        if not isinstance(task, str) or task not in supervisor.app.tasks:
            raise Refused(f"unknown task {task!r}")
        soft = _limit(message.arguments.get("soft"), "soft")
        hard = _limit(message.arguments.get("hard"), "hard")
        supervisor.set_time_limit(task, soft, hard)
        log.info("new time limits for %s: soft=%s hard=%s", task, soft, hard)
        return {"ok": f"time limits set successfully: {task} soft={soft} hard={hard}"}

    def add_consumer(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        queue = _queue(message.arguments.get("queue"))
        groups = [g for g in supervisor.groups if queue not in g.spec.queues]
        if not groups:
            return {"ok": f"already consuming from {queue!r}"}
        for group in groups:
            supervisor.change_group(group, queues=[*group.spec.queues, queue])
        log.info("now consuming from %s too (celeriac control add_consumer)", queue)
        return {"ok": f"add consumer {queue}"}

    def cancel_consumer(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        queue = _queue(message.arguments.get("queue"))
        groups = [g for g in supervisor.groups if queue in g.spec.queues]
        if not groups:
            raise Refused(f"not consuming from {queue!r}")
        for group in groups:
            supervisor.change_group(group, queues=[q for q in group.spec.queues if q != queue])
        log.info("no longer consuming from %s (celeriac control cancel_consumer)", queue)
        return {"ok": f"no longer consuming from {queue}"}

    def pool_grow(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        return _resize(supervisor, _count(message.arguments.get("n", 1)), "grown")

    def pool_shrink(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        return _resize(supervisor, -_count(message.arguments.get("n", 1)), "shrunk")

    def autoscale(self, supervisor: Supervisor, message: ControlMessage) -> Any:
        scaler = supervisor.pipeline.find(Autoscaler)
        if scaler is None:
            raise Refused("autoscale is not enabled on this node (start it with --autoscale "
                          "MAX,MIN)")
        bounds = [message.arguments.get(name) for name in ("max", "min")]
        if not all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds):
            raise Refused(f"max and min must be whole numbers, got {bounds!r:.80}")
        try:
            high, low = scaler.update(supervisor, *bounds)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        log.info("autoscale now max=%d min=%d (celeriac control autoscale)", high, low)
        return {"ok": f"autoscale now max={high} min={low}"}


HANDLERS: dict[str, Handler] = {
    name: getattr(RemoteControl, name)
    for name in ("ping", "active", "reserved", "query_task", "scheduled", "stats", "report",
                 "registered", "revoked", "active_queues", "conf", "shutdown", "rate_limit", "time_limit",
                 "add_consumer", "cancel_consumer", "pool_grow", "pool_shrink", "autoscale")
}


def _ids(value: Any) -> frozenset[str]:
    """``query_task``'s ids: one id or a list of them."""
    if isinstance(value, str):
        return frozenset((value,))
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise Refused(f"ids must be a task id or a list of task ids, got {value!r:.80}")


def _limit(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise Refused(f"{what} time limit must be a number of seconds > 0 or null, "
                      f"got {value!r:.50}")
    return float(value)


def _queue(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Refused(f"queue must be a queue name, got {value!r:.50}")
    return value.strip()


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Refused(f"n must be a whole number >= 1, got {value!r:.50}")
    return value


def _resize(supervisor: Supervisor, delta: int, verb: str) -> dict[str, str]:
    """Every pool group by ``delta`` tasks at once: slots per process for pools that resize
    in place (threads, green), processes for one-task-per-process pools (prefork, solo)."""
    if supervisor.pipeline.find(Autoscaler) is not None:
        command = "pool_grow" if delta > 0 else "pool_shrink"
        raise Refused(f"{command} is not supported with autoscale. Adjust autoscale range "
                      "instead.")
    for group in supervisor.groups:
        if group.size + delta < 1:
            raise Refused(f"cannot shrink {_shape(group)} by {-delta}: it would run nothing")
    changes = []
    for group in list(supervisor.groups):
        new = supervisor.resize(group, group.size + delta)
        changes.append(f"{_shape(group)} -> {_shape(new)}")
    log.info("pool %s by %d: %s", verb, abs(delta), "; ".join(changes))
    return {"ok": f"pool {verb} by {abs(delta)}: {'; '.join(changes)}"}


def _shape(group: Any) -> str:
    return f"{group.spec.pool} {group.processes}x{group.per_process}"
