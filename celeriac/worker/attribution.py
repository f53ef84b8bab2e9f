"""Who pays when a task's process cannot finish it: the supervisor's verdicts.

A worker process settles its own tasks. When it cannot -- it died, it was killed
past a hard time limit, or the whole node vanished -- the supervisor of that node
(or, for a vanished node, any live one) decides what each held message costs:

* :func:`blame`: a process that died on its own. A lone running task, or the task
  that was blocking a green event loop, is charged a delivery; any other death
  marks every running task *suspect*, uncharged, to run next alone or in a group
  half as big (see :meth:`Broker.release_consumer`), until the culprit runs alone.
* :meth:`Verdicts.overran`: a task past its hard time limit fails once with
  ``TimeLimitExceeded`` and is acked before its process is killed.
* :meth:`Verdicts.fail_spent`: a task whose crash cost its last delivery gets a
  ``WorkerLostError`` result, since the broker dead-letters it instead of
  delivering it again and ``get()`` would otherwise wait forever.
* :meth:`Verdicts.reap_vanished`: a node whose heartbeat expired (SIGKILLed with
  its supervisor, its machine gone, or frozen) has what its processes held
  released by a live node at once, instead of waiting for the leases, and blamed
  as for a process that died, one process at a time; a frozen node that wakes up
  finds its leases fenced, so its late acks are refused and nothing it held is lost.

The hooks a task's own process would have run (``task_failure``, the task class's
handlers, ``-E`` events) run in the supervisor for the tasks it ends itself.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.beat.presence import is_beat
from celeriac.context import Request
from celeriac.exceptions import (
    BrokerError,
    CeleriacError,
    ExceptionInfo,
    TimeLimitExceeded,
    WorkerLostError,
)
from celeriac.middleware import ACK, DEAD, Outcome
from celeriac.middleware.base import Pipeline, TaskRun
from celeriac.middleware.chords import join, member_of
from celeriac.worker.run import failure_record
from celeriac.worker.settle import Settler
from celeriac.worker.status import RunningTask

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import ResultRecord
    from celeriac.worker.supervisor import Child

log = logging.getLogger("celeriac.supervisor")


def blame(child: Child, restart_seconds: float = 0.0, durations: Mapping[str, float] | None = None
          ) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """Who pays for a process that died on its own: ``(charged, suspects, group)``.

    A lone running task is charged a delivery (prefork always, or a suspect that ran
    alone). A green (or asyncio) process whose event loop a task was blocking was running
    that task only: it alone is charged, the others could not have run. Any other death of a
    process running N tasks (an exit, SIGSEGV, SIGABRT, a SIGKILL from the kernel's OOM
    killer or an operator) cannot be pinned on one of them: none is charged, all are
    marked suspect, and each runs next in a group of at most :func:`suspect_group`
    tasks (:meth:`Consumer._dispatch`), where a crash alone is its own and is charged.
    """
    running = tuple(child.running)
    if len(running) <= 1:
        return running, (), 0
    if child.blocker in child.running and child.group.pool_class.enforces_hard_limit:
        # (On threads a blocked loop holds up the other coroutines only, not the sync tasks.)
        return (child.blocker,), (), 0
    # How long the running tasks take: what runs of the same tasks took before, or at
    # least what they had run so far; a task never seen to finish counts as long.
    known = durations or {}
    now = time.time()
    estimates = sorted(max(known.get(task.name, math.inf), now - task.started_at)
                       for task in child.running.values())
    return (), running, suspect_group(len(running), estimates[len(estimates) // 2],
                                      restart_seconds)


def suspect_group(count: int, task_seconds: float, restart_seconds: float) -> int:
    """The group size for ``count`` suspects of one crash: 1 (each alone) or count/2.

    Running each alone finds the culprit at its first crash, but the innocents run one
    after another: about ``count x task_seconds``. Halving the group lets the groups
    without the culprit complete side by side, and the one with it crash again, about
    log2(count) times, each crash costing a new process and a run: ``log2(count) x
    (restart_seconds + task_seconds)``. The cheaper one wins: short tasks (a few ms,
    where a process restart dominates) go alone at once, so a poison task also kills
    fewer processes; long ones (seconds) are halved. ``task_seconds`` is the median over
    the running tasks of what earlier runs of each took (a task whose runs were never
    seen to end counts as infinitely long: when unsure, halve, as running each alone
    when tasks are long costs far more than halving when they are short).
    """
    if math.isinf(task_seconds):
        return count // 2
    alone = count * task_seconds
    halving = math.ceil(math.log2(count)) * (restart_seconds + task_seconds)
    return 1 if alone <= halving else count // 2


def held_by(consumers: Iterable[tuple[str, Iterable[RunningTask]]]) -> dict[str, list[list[Any]]]:
    """What a node's heartbeat says its processes run: consumer id -> running tasks.

    A live node that finds this node's heartbeat expired releases each consumer's
    messages and blames these tasks (:meth:`Verdicts.reap_vanished`). Each task is
    ``[delivery_id, task_id, name, delivery_count, ignore_result, queue, started_at]``:
    enough to fail one whose crash cost its last delivery, and for the dashboard to say
    how long it has run (``started_at``: Unix time the supervisor learnt it started).
    """
    return {consumer: [[t.delivery_id, t.task_id, t.name, t.delivery_count, t.ignore_result,
                        t.queue, t.started_at] for t in running]
            for consumer, running in consumers}


def _running_from_heartbeat(entry: Sequence[Any]) -> RunningTask:
    """One task of :func:`held_by`'s record (a record of an older node, without
    ``started_at``, reads too)."""
    delivery_id, task_id, name, count, ignore_result, queue, *rest = entry
    return RunningTask(delivery_id=str(delivery_id), token=0, queue=str(queue),
                       delivery_count=int(count), task_id=str(task_id), name=str(name),
                       ignore_result=bool(ignore_result), deadline=None,
                       started_at=float(rest[0]) if rest else 0.0)


class Verdicts:
    """Ends the tasks that their own process cannot: settles them and runs their hooks."""

    def __init__(self, app: Celeriac, pipeline: Pipeline, settler: Settler) -> None:
        self.app = app
        #: The node's hooks, for the ``after_task`` of tasks ended here.
        self.pipeline = pipeline
        #: Settles what the supervisor fails itself: results, then acks.
        self.settler = settler

    def overran(self, child: Child, task: RunningTask) -> None:
        """``task`` passed its hard time limit and its process is about to be killed: it
        fails once with TimeLimitExceeded and its message is acked, before the kill, so it
        does not run again (the process's other messages go back uncharged). A task with
        ``reject_on_worker_lost`` goes back to the queue instead, charged a delivery; one with
        ``acks_on_failure_or_timeout=False`` is dead-lettered instead of acked."""
        # A green or asyncio pool ends a late task itself unless its loop is blocked; on
        # any pool, the task the process reported blocking its event loop is the culprit.
        blocked = (child.group.pool_class.enforces_hard_limit
                   or child.blocker == task.delivery_id)
        how = (f"blocked the event loop of worker process {child.proc.pid} past its hard time "
               "limit" if blocked
               else f"exceeded its hard time limit in worker process {child.proc.pid}")
        registered = self.app.tasks.get(task.name)
        if registered is not None and registered.reject_on_worker_lost:
            log.error("task %s[%s] %s; killing the process (reject_on_worker_lost: the message "
                      "goes back to the queue, charged a delivery)", task.name, task.task_id, how)
            child.charged.append(task.delivery_id)
            return
        log.error("task %s[%s] %s; it fails with TimeLimitExceeded, killing the process",
                  task.name, task.task_id, how)
        child.running.pop(task.delivery_id, None)
        error = TimeLimitExceeded(f"task {task.name} exceeded its hard time limit")
        record = failure_record(task.task_id, task.name, error, tb="")
        keep = not task.ignore_result or (registered is not None
                                          and registered.store_errors_even_if_ignored)
        outcome = Outcome(ACK, ran=True, record=record if keep else None)
        if registered is not None and registered.acks_late and not registered.acks_on_failure_or_timeout:
            outcome = Outcome(DEAD, "task timed out and acks_on_failure_or_timeout is False",
                              ran=True, record=outcome.record)
        try:
            self.settler.settle([(task.delivery(), outcome)])
        except CeleriacError as exc:
            log.error("could not settle %s[%s] after its hard time limit: %s; it will be "
                      "delivered again", task.name, task.task_id, exc)
            child.charged.append(task.delivery_id)
            return
        self.after_task(task, record, error)

    def fail_spent(self, running: Iterable[RunningTask], charged: Iterable[str],
                   where: str = "worker process") -> None:
        """Fail the tasks that a crash cost their last delivery (WorkerLostError).

        The broker dead-letters them on the next fetch instead of delivering
        them, so without a result ``get()`` would wait forever.
        """
        limit = self.app.broker.max_deliveries
        charged = set(charged)
        for task in running:
            if task.delivery_id in charged and task.delivery_count >= limit:
                alone = " while running it alone" if task.isolated else ""
                error = WorkerLostError(
                    f"the {where} running task {task.name} died{alone} on delivery "
                    f"{task.delivery_count} of {limit} (broker_max_deliveries); the message "
                    "goes to the dead-letter store")
                record = failure_record(task.task_id, task.name, error, tb="")
                if not task.ignore_result:
                    try:
                        self.app.backend.store(record)
                    except CeleriacError as exc:
                        log.error("could not store the failure of %s[%s]: %s", task.name,
                                  task.task_id, exc)
                self.after_task(task, record, error)

    def after_task(self, task: RunningTask, record: ResultRecord,
                   error: BaseException | None = None, revoked: str = "",
                   signal: str | None = None) -> None:
        """The ``after_task`` hooks for a task the supervisor ended itself (a hard time
        limit, a terminate by replacing the process, a last delivery lost with its process
        or node): its own process cannot run them any more, so Celery's signals
        (``task_failure``, ``task_revoked``...), the task class's handlers and ``-E``'s
        events fire here. The supervisor has only the reprs of the arguments: ``args``
        and ``kwargs`` are empty."""
        registered = self.app.tasks.get(task.name)
        if registered is None:
            return
        embed = task.followups or {}
        request = Request(id=task.task_id, task=task.name, queue=task.queue,
                          delivery_count=task.delivery_count, hostname=socket.gethostname(),
                          called_directly=False, errbacks=embed.get("errbacks"),
                          chain=embed.get("chain"), chord=embed.get("chord"),
                          group=embed.get("group"), group_index=embed.get("group_index"))
        run = TaskRun(registered, request, revoked=revoked, signal=signal, record=record,
                      ignore_result=task.ignore_result)
        if error is not None:
            run.einfo = ExceptionInfo(error, traceback="")
        self.pipeline.after_task(run)  # errbacks, and the failure stored down its chain
        member = member_of(request, record)
        if member is not None:
            try:
                join(self.app, member)
            except (CeleriacError, OSError) as exc:
                log.error("chord %s: member %s[%s] could not join it: %s; the chord will not "
                          "complete", member.group_id, task.name, task.task_id, exc)

    def reap_vanished(self, node: str) -> int:
        """Release what the worker processes of every node whose heartbeat expired held.

        Each process's running tasks (as of the node's last heartbeat) are blamed as
        :func:`blame` does: one alone is charged a delivery, several are marked suspect
        with half their number as group; the rest go back uncharged (a task started
        after the last heartbeat among them). Each release is fenced: a node
        that was only frozen finds its leases gone when it wakes, and its late acks are
        refused. Returns how many messages were released.
        """
        released = 0
        for dead in self.app.broker.reap_workers():
            if dead.name == node:
                continue  # our own record expired while we could not beat; we are alive
            if is_beat(dead):  # a beat holds no message; the other beats send its runs
                log.warning("beat %s stopped sending heartbeats (last seen %.1fs ago)",
                            dead.name, max(0.0, time.time() - dead.last_seen))
                continue
            consumers = dead.info.get("consumers")
            total = 0
            if isinstance(consumers, dict):
                for consumer, entries in consumers.items():
                    total += self._release(str(consumer), entries)
            released += total
            log.warning("node %s stopped sending heartbeats (last seen %.1fs ago): %d message(s) "
                        "its worker processes held were released", dead.name,
                        max(0.0, time.time() - dead.last_seen), total)
        return released

    def _release(self, consumer: str, entries: Any) -> int:
        try:
            running = [_running_from_heartbeat(e) for e in entries]
        except (TypeError, ValueError):
            running = []  # a record from another version: release, charge nothing
        ids = [t.delivery_id for t in running]
        started, suspects = (ids, []) if len(ids) <= 1 else ([], ids)
        try:
            count = self.app.broker.release_consumer(consumer, started=started,
                                                     suspects=suspects, group=len(ids) // 2)
        except BrokerError as exc:
            log.error("could not release the messages of %s: %s; they will be delivered again "
                      "when their leases expire", consumer, exc)
            return 0
        # The heartbeat is up to an interval old: a task it lists may have finished
        # since (its message acked, so not released). Such a task has its result.
        # An orphaned process's record has no task ids: nothing to fail there.
        self.fail_spent([t for t in running if t.delivery_id in started and t.task_id
                         and t.delivery_count >= self.app.broker.max_deliveries
                         and not self._finished(t)], started, where="worker node")
        return count

    def _finished(self, task: RunningTask) -> bool:
        try:
            record = self.app.backend.get(task.task_id)
        except CeleriacError:
            return False
        return record is not None and record.ready

