"""An in-process broker (``memory://``).

It exists for tests and for a worker whose producers live in the same process
(thread or green pool, ``celeriac worker --pool threads`` in a notebook...).
Nothing leaves the process, and every instance has its own queues, so two tests
never see each other's messages. It follows exactly the semantics of the SQLite
broker (same lease, fencing, delivery-count and dead-letter rules), so code
tested against it behaves the same in production.

Layout, chosen so that a fetch costs O(log n) per message instead of a scan:

* every live message is in ``_messages`` by id;
* a message that can be claimed now sits in its queue's *ready* heap, ordered
  by (priority desc, available_at, id);
* a message that will only be claimable later -- it has an eta, or it is
  leased and its lease has not run out -- sits in its queue's *pending* heap,
  ordered by the time it becomes claimable. Like the SQLite broker, a claimed
  message's ``available_at`` *is* its lease deadline, so lease expiry and eta
  are one mechanism.

Heap entries are never removed in place: each carries the message's ``stamp``
at push time, and any change to the message bumps the stamp, so stale entries
are recognised and dropped when they surface.

Revocations are a list in ``seq`` order (a cursor is a bisection) plus a heap by
expiry, so dropping the expired ones costs nothing until one is due. Reply boxes
are lists in a dict; a waiting ``replies()`` sleeps on a condition of the lock.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac.brokers.base import (
    Broker,
    ControlCommand,
    DeadLetter,
    Delivery,
    OutgoingMessage,
    Revocation,
    WorkerEvent,
    WorkerInfo,
    check_priority,
    max_deliveries_reason,
)
from celeriac.brokers.browse import is_retry
from celeriac.brokers.limits import LimitState
from celeriac.brokers.memory_admin import MemoryAdmin
from celeriac.brokers.metrics import MetricRow, MetricStore, span

#: (-priority, available_at, id, stamp): the smallest entry is claimed first.
_ReadyEntry = tuple[int, float, int, int]
#: (available_at, id, stamp): the smallest entry becomes claimable first.
_PendingEntry = tuple[float, int, int]


@dataclass
class _Message:
    id: int
    queue: str
    body: bytes
    priority: int
    #: When the message can be claimed: its eta, or its lease deadline while claimed.
    available_at: float
    consumer: str | None = None
    token: int = 0
    delivery_count: int = 0
    #: Released from a process that died running it beside other tasks (see
    #: ``Broker.release_consumer``); kept until the message is acked or dead-lettered.
    suspect: int = 0
    #: Bumped on every change; heap entries with an older stamp are stale.
    stamp: int = 0
    #: When it was published (for the dashboard's listings).
    published_at: float = 0.0
    #: A task's retry published with a countdown (listed under "retries", not "scheduled").
    retry: bool = False


@dataclass
class _Box:
    """A reply box: replies in arrival order, and when the box is deleted."""

    replies: list[dict[str, Any]]
    expires_at: float


@dataclass
class _Worker:
    info: dict[str, Any]
    last_seen: float
    expires_at: float


def _json_copy(info: dict[str, Any]) -> dict[str, Any]:
    """Round-trip worker info through JSON, as brokers that store it as text do.

    That way ``workers()`` returns the same shapes (lists, not tuples; str() of
    exotic values) whatever the broker, and a caller mutating its dict later
    does not change what others see.
    """
    copied: dict[str, Any] = json.loads(json.dumps(info, default=str))
    return copied


class MemoryBroker(MemoryAdmin, Broker):
    """Queues in heaps guarded by one lock; waiting fetches sleep on a condition."""

    schemes = ("memory",)
    shared_between_processes = False

    def __init__(self, url: str = "memory://", *, max_deliveries: int = 5,
                 poll_interval: float = 0.05,
                 pool_limit: int = 32) -> None:
        super().__init__(url, max_deliveries=max_deliveries, poll_interval=poll_interval,
                         pool_limit=pool_limit)
        self._lock = threading.Lock()
        # Notified whenever a message may have become claimable without the
        # clock moving (publish, requeue, release), so waiting fetches wake at once.
        self._arrived = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._messages: dict[int, _Message] = {}
        self._ready: dict[str, list[_ReadyEntry]] = {}
        self._pending: dict[str, list[_PendingEntry]] = {}
        self._dead: list[DeadLetter] = []
        #: When each dead letter was published, and its priority, by id.
        self._dead_meta: dict[str, tuple[float, int]] = {}
        #: Queues paused by :meth:`pause`.
        self._paused: set[str] = set()
        self._queues: set[str] = set()
        self._workers: dict[str, _Worker] = {}
        #: Worker events, oldest first; seqs are consecutive, so a seq's index is arithmetic.
        self._events: list[WorkerEvent] = []
        self._event_seq = 0
        #: Revocations in force, in seq order; ``_revocation_expiry`` has (expires, seq) of each.
        self._revoked: list[Revocation] = []
        self._revocation_expiry: list[tuple[float, int]] = []
        self._revocation_seq = 0
        #: Control commands, oldest first; seqs are consecutive, like the events'.
        self._commands: list[ControlCommand] = []
        self._command_seq = 0
        self._boxes: dict[str, _Box] = {}
        # Notified by every reply, so a waiting replies() wakes at once.
        self._replied = threading.Condition(self._lock)
        #: Rate and concurrency limits (see the block at the end of the class).
        self._limits = LimitState()
        #: Metric rollups (see the block at the end of the class).
        self._metric_rows = MetricStore()

    # -- internal bookkeeping (call with the lock held) ------------------------------
    def _place(self, message: _Message, now: float) -> None:
        """Record a change to ``message`` and file it in the right heap."""
        message.stamp += 1
        if message.available_at <= now:
            heapq.heappush(self._ready.setdefault(message.queue, []),
                           (-message.priority, message.available_at, message.id, message.stamp))
        else:
            heapq.heappush(self._pending.setdefault(message.queue, []),
                           (message.available_at, message.id, message.stamp))

    def _live(self, message_id: int, stamp: int) -> _Message | None:
        message = self._messages.get(message_id)
        return message if message is not None and message.stamp == stamp else None

    def _promote(self, queue: str, now: float) -> None:
        """Move messages whose eta or lease has come due from pending to ready."""
        pending = self._pending.get(queue)
        while pending and pending[0][0] <= now:
            _, message_id, stamp = heapq.heappop(pending)
            message = self._live(message_id, stamp)
            if message is not None:
                heapq.heappush(self._ready.setdefault(queue, []),
                               (-message.priority, message.available_at, message_id, stamp))

    def _ready_top(self, queue: str) -> _ReadyEntry | None:
        ready = self._ready.get(queue)
        while ready and self._live(ready[0][2], ready[0][3]) is None:
            heapq.heappop(ready)
        return ready[0] if ready else None

    def _next_due(self, queues: Sequence[str]) -> float | None:
        """The earliest time a message in ``queues`` becomes claimable, if any is pending."""
        due: float | None = None
        for queue in queues:
            pending = self._pending.get(queue)
            while pending and self._live(pending[0][1], pending[0][2]) is None:
                heapq.heappop(pending)
            if pending and (due is None or pending[0][0] < due):
                due = pending[0][0]
        return due

    def _held(self, deliveries: Sequence[Delivery]) -> Iterator[tuple[int, _Message | None]]:
        """Each delivery's index and its message, or None when the token is stale.

        A message is held by a delivery while it is claimed (not requeued or
        released) under that delivery's token.
        """
        for index, delivery in enumerate(deliveries):
            try:
                message = self._messages.get(int(delivery.id))
            except ValueError:
                message = None
            if message is not None and (message.consumer is None
                                        or message.token != delivery.token):
                message = None
            yield index, message

    def _bury(self, message: _Message, reason: str, now: float) -> None:
        del self._messages[message.id]
        self._dead_meta[str(message.id)] = (message.published_at, message.priority)
        self._dead.append(DeadLetter(id=str(message.id), queue=message.queue,
                                     body=message.body, reason=reason,
                                     delivery_count=message.delivery_count, failed_at=now))

    def _claim(self, queues: Sequence[str], count: int, consumer: str,
               lease: float) -> list[Delivery]:
        now = time.time()
        for queue in queues:
            self._promote(queue, now)
        claimed: list[Delivery] = []
        while len(claimed) < count:
            best: tuple[_ReadyEntry, str] | None = None
            for queue in queues:
                top = self._ready_top(queue)
                if top is not None and (best is None or top < best[0]):
                    best = (top, queue)
            if best is None:
                break
            heapq.heappop(self._ready[best[1]])
            message = self._messages[best[0][2]]
            if message.delivery_count >= self.max_deliveries:
                self._bury(message, max_deliveries_reason(self.max_deliveries,
                                                          suspect=message.suspect == 1), now)
                continue
            message.consumer = consumer
            message.token += 1
            message.delivery_count += 1
            message.available_at = now + lease
            # Always pending, even for lease <= 0: a message must not be claimed
            # twice by one fetch. The next fetch promotes it if its lease is over.
            message.stamp += 1
            heapq.heappush(self._pending.setdefault(message.queue, []),
                           (message.available_at, message.id, message.stamp))
            claimed.append(Delivery(id=str(message.id), queue=message.queue, body=message.body,
                                    delivery_count=message.delivery_count, token=message.token,
                                    priority=message.priority, suspect=message.suspect))
        return claimed

    # -- producing -------------------------------------------------------------------
    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        for outgoing in messages:
            check_priority(outgoing)
        with self._lock:
            now = time.time()
            ids: list[str] = []
            for outgoing in messages:
                delayed = outgoing.eta is not None and outgoing.eta > now
                message = _Message(id=next(self._ids), queue=outgoing.queue,
                                   body=bytes(outgoing.body), priority=outgoing.priority,
                                   available_at=now if outgoing.eta is None else outgoing.eta,
                                   published_at=now,
                                   retry=delayed and is_retry(outgoing.body))
                self._messages[message.id] = message
                self._queues.add(message.queue)
                self._place(message, now)
                ids.append(str(message.id))
            if ids:
                self._arrived.notify_all()
            return ids

    # -- consuming -------------------------------------------------------------------
    def fetch(self, queues: Sequence[str], count: int, *, consumer: str, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        queues = list(dict.fromkeys(queues))
        if count <= 0 or not queues:
            return []
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                claimed = self._claim(queues, count, consumer, lease)
                remaining = deadline - time.monotonic()
                if claimed or remaining <= 0:
                    return claimed
                due = self._next_due(queues)
                if due is not None:
                    remaining = min(remaining, max(due - time.time(), 0.0))
                self._arrived.wait(remaining)

    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        with self._lock:
            done = [False] * len(deliveries)
            for index, message in self._held(deliveries):
                if message is not None:
                    del self._messages[message.id]
                    done[index] = True
            return done

    def renew(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        with self._lock:
            now = time.time()
            done = [False] * len(deliveries)
            for index, message in self._held(deliveries):
                if message is not None:
                    message.available_at = now + lease
                    self._place(message, now)
                    done[index] = True
            return done

    def requeue(self, deliveries: Sequence[Delivery], *, delay: float = 0.0,
                uncharge: bool = False) -> list[bool]:
        with self._lock:
            now = time.time()
            done = [False] * len(deliveries)
            for index, message in self._held(deliveries):
                if message is not None:
                    message.consumer = None
                    message.available_at = now + delay
                    if uncharge:
                        message.delivery_count = max(message.delivery_count - 1, 0)
                    self._place(message, now)
                    done[index] = True
            if any(done):
                self._arrived.notify_all()
            return done

    def dead_letter(self, deliveries: Sequence[Delivery], reason: str) -> list[bool]:
        with self._lock:
            now = time.time()
            done = [False] * len(deliveries)
            for index, message in self._held(deliveries):
                if message is not None:
                    self._bury(message, reason, now)
                    done[index] = True
            return done

    def release_consumer(self, consumer: str, *, started: Collection[str] = (),
                         suspects: Collection[str] = (), group: int = 1) -> int:
        started, suspects, group = set(started), set(suspects), max(group, 1)
        with self._lock:
            now = time.time()
            released = [m for m in self._messages.values() if m.consumer == consumer]
            for message in released:
                message.consumer = None
                message.available_at = now
                if str(message.id) not in started:
                    message.delivery_count = max(message.delivery_count - 1, 0)
                if str(message.id) in suspects:
                    message.suspect = min(message.suspect or group, group)
                self._place(message, now)
            if released:
                self._arrived.notify_all()
            return len(released)

    # -- inspection and maintenance --------------------------------------------------
    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            newest_first = (d for d in reversed(self._dead) if queue is None or d.queue == queue)
            return list(itertools.islice(newest_first, max(limit, 0)))

    def purge(self, queue: str | None = None) -> int:
        with self._lock:
            now = time.time()
            doomed = [m.id for m in self._messages.values()
                      if (queue is None or m.queue == queue)
                      and (m.consumer is None or m.available_at <= now)]
            for message_id in doomed:
                del self._messages[message_id]
            # Every ready message of the purged queues is gone, and so are the
            # scheduled ones: drop their heap entries now rather than lazily, so a
            # purge of a big backlog gives its memory back at once.
            for name in [queue] if queue is not None else list(self._queues):
                self._ready.pop(name, None)
                pending = [e for e in self._pending.get(name, ())
                           if self._live(e[1], e[2]) is not None]
                heapq.heapify(pending)
                self._pending[name] = pending
            return len(doomed)

    def heartbeat(self, worker: str, info: dict[str, Any], ttl: float) -> None:
        info = _json_copy(info)
        with self._lock:
            now = time.time()
            self._workers[worker] = _Worker(info=info, last_seen=now, expires_at=now + ttl)

    def forget_worker(self, worker: str) -> None:
        with self._lock:
            self._workers.pop(worker, None)

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            now = time.time()
            return [WorkerInfo(name=name, info=_json_copy(w.info), last_seen=w.last_seen)
                    for name, w in sorted(self._workers.items()) if w.expires_at > now]

    def reap_workers(self) -> list[WorkerInfo]:
        with self._lock:
            now = time.time()
            dead = sorted(name for name, w in self._workers.items() if w.expires_at <= now)
            return [WorkerInfo(name=name, info=w.info, last_seen=w.last_seen)
                    for name, w in ((n, self._workers.pop(n)) for n in dead)]

    def emit(self, events: Sequence[WorkerEvent]) -> None:
        copies = [(e, _json_copy(e.data)) for e in events]
        now = time.time()
        with self._lock:
            for event, data in copies:
                self._event_seq += 1
                self._events.append(WorkerEvent(type=event.type, worker=event.worker, data=data,
                                                time=event.time or now, seq=self._event_seq))
            # Trim in slices of a tenth of the cap: O(1) amortised per event.
            excess = len(self._events) - self.events_kept
            if excess > max(self.events_kept // 10, 0):
                del self._events[:excess]

    def events(self, after: int = 0, limit: int = 100) -> list[WorkerEvent]:
        with self._lock:
            if not self._events or limit <= 0:
                return []
            # Only the newest events_kept count, whether or not trimmed yet.
            first = max(self._events[0].seq, self._event_seq - self.events_kept + 1, after + 1)
            start = first - self._events[0].seq
            return [WorkerEvent(type=e.type, worker=e.worker, data=_json_copy(e.data),
                                time=e.time, seq=e.seq)
                    for e in self._events[start:start + limit]]

    def newest_event_seq(self) -> int:
        with self._lock:
            return self._event_seq if self._events else 0

    # -- revoke ----------------------------------------------------------------------
    def _drop_expired_revocations(self, now: float) -> None:
        """Forget revocations whose time is up (call with the lock held)."""
        expiry = self._revocation_expiry
        gone: set[int] = set()
        while expiry and expiry[0][0] <= now:
            gone.add(heapq.heappop(expiry)[1])
        if gone:
            self._revoked = [r for r in self._revoked if r.seq not in gone]

    def revoke(self, revocations: Sequence[Revocation]) -> None:
        with self._lock:
            for revocation in revocations:
                self._revocation_seq += 1
                stored = Revocation(task_id=revocation.task_id, expires=revocation.expires,
                                    terminate=revocation.terminate, signal=revocation.signal,
                                    seq=self._revocation_seq)
                self._revoked.append(stored)
                heapq.heappush(self._revocation_expiry, (stored.expires, stored.seq))
            self._drop_expired_revocations(time.time())

    def revocations(self, after: int = 0, limit: int = 1000) -> list[Revocation]:
        with self._lock:
            self._drop_expired_revocations(time.time())
            start = bisect.bisect_right(self._revoked, after, key=lambda r: r.seq)
            return self._revoked[start:start + max(limit, 0)]

    # -- remote control ----------------------------------------------------------------
    def broadcast(self, body: dict[str, Any]) -> int:
        body = _json_copy(body)
        now = time.time()
        with self._lock:
            self._command_seq += 1
            self._commands.append(ControlCommand(seq=self._command_seq, body=body, time=now))
            # Trim in slices of a tenth of the cap, like the events.
            excess = len(self._commands) - self.commands_kept
            if excess > max(self.commands_kept // 10, 0):
                del self._commands[:excess]
            return self._command_seq

    def commands(self, after: int, limit: int = 100) -> list[ControlCommand]:
        with self._lock:
            if not self._commands or limit <= 0:
                return []
            # Only the newest commands_kept count, whether or not trimmed yet.
            first = max(self._commands[0].seq, self._command_seq - self.commands_kept + 1,
                        after + 1)
            start = first - self._commands[0].seq
            return [ControlCommand(seq=c.seq, body=_json_copy(c.body), time=c.time)
                    for c in self._commands[start:start + limit]]

    def command_cursor(self) -> int:
        with self._lock:
            return self._command_seq

    def _drop_expired_boxes(self, now: float) -> None:
        """Delete reply boxes whose time is up (call with the lock held)."""
        for name in [n for n, box in self._boxes.items() if box.expires_at <= now]:
            del self._boxes[name]

    def reply(self, reply_to: str, body: dict[str, Any], ttl: float = 60.0) -> None:
        body = _json_copy(body)
        with self._lock:
            now = time.time()
            self._drop_expired_boxes(now)
            box = self._boxes.setdefault(reply_to, _Box(replies=[], expires_at=now + ttl))
            box.replies.append(body)
            box.expires_at = now + ttl
            if box.expires_at <= now:
                del self._boxes[reply_to]
            self._replied.notify_all()

    def replies(self, reply_to: str, *, timeout: float,
                count: int | None = None) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        with self._lock:
            while True:
                self._drop_expired_boxes(time.time())
                box = self._boxes.get(reply_to)
                if box is not None:
                    take = len(box.replies) if count is None else max(count - len(got), 0)
                    got += box.replies[:take]
                    del box.replies[:take]
                remaining = deadline - time.monotonic()
                if (count is not None and len(got) >= count) or remaining <= 0:
                    return got
                self._replied.wait(remaining)

    def ping(self) -> None:
        """Always reachable: it lives in this process."""

    # == periodic tasks (beat): celeriac/beat/ =================================
    # Keep other features' methods outside this block (merges stay easy).
    def beat_runs(self, names: Sequence[str]) -> dict[str, float]:
        with _BEAT_LOCK:
            runs = self._beat_last_runs()
            return {name: runs[name] for name in names if name in runs}

    def beat_claim(self, name: str, previous: float | None, run_at: float,
                   messages: Sequence[OutgoingMessage]) -> bool:
        # Beats of one process share this broker: the lock makes check, publish and
        # record one step for them (a publish that raises records nothing).
        with _BEAT_LOCK:
            runs = self._beat_last_runs()
            if runs.get(name) != previous:
                return False
            self.publish(messages)
            runs[name] = run_at
            return True

    def _beat_last_runs(self) -> dict[str, float]:
        """Entry name -> last run; created on first use (under ``_BEAT_LOCK``)."""
        runs: dict[str, float] = self.__dict__.setdefault("_beat_runs", {})
        return runs
    # == end of periodic tasks (beat) =================================================

    # == rate and concurrency limits (issue 11; the sums are in celeriac.brokers.limits) ==
    def take_rate_token(self, task: str, rate: float, burst: int, ticket: str) -> float:
        with self._lock:
            return self._limits.take_token(task, rate, burst, ticket, time.time())

    def acquire_slot(self, task: str, limit: int, holder: str, ttl: float) -> bool:
        with self._lock:
            return self._limits.acquire_slot(task, limit, holder, ttl, time.time())

    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        with self._lock:
            self._limits.renew_slots(list(slots), ttl, time.time())

    def release_slot(self, task: str, holder: str) -> None:
        with self._lock:
            self._limits.release_slot(task, holder)

    def slots_in_use(self, task: str) -> int:
        with self._lock:
            return self._limits.running(task, time.time())

    def set_rate_limit(self, task: str, rate: str) -> None:
        with self._lock:
            self._limits.overrides[task] = rate

    def rate_limits(self) -> dict[str, str]:
        with self._lock:
            return dict(self._limits.overrides)
    # == end of rate and concurrency limits ============================================

    # == metric rollups (issue 14; see celeriac.brokers.metrics) =======================
    def record_metrics(self, rows: Sequence[MetricRow]) -> None:
        if rows:
            self._metric_rows.record(rows, time.time(), self.metrics_retention)

    def metrics(self, since: float, until: float, task: str | None = None, *,
                step: int = 60) -> list[MetricRow]:
        periods = span(since, until, time.time(), self.metrics_retention, step)
        return self._metric_rows.read(periods, task)
    # == end of metric rollups ===========================================================


#: Serialises beat claims on memory brokers: they are rare (one per periodic run), and a
#: module lock keeps the beat block out of ``__init__``.
_BEAT_LOCK = threading.Lock()
