"""The RabbitMQ broker (``amqp://``, ``amqps://``; Celery's ``pyamqp://`` too).

Messages live in RabbitMQ queues (quorum by default; Celery's classic layout with
``broker_queue_type="classic"``); everything else a broker keeps -- workers, events,
control, revocations, beat claims, rate limits, and celeriac's own delivery counts --
lives in the *state store*, a Redis or SQLite broker from ``broker_state_url``
(:mod:`celeriac.brokers.amqp.state`). ``docs/rabbitmq.md`` is the user's account; the
design and its measurements are in the issue's notes.

Each process has one connection, owned by a native thread
(:mod:`celeriac.brokers.amqp.connection`), and each broker instance its own buffer of
deliveries (:mod:`celeriac.brokers.amqp.consume`). Settling is one ``tx.commit`` on the
consume channel per call: an ack, or a republished copy together with the ack of the
original (a requeue, a delay, a dead letter), so a crash never leaves both or neither.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from celeriac.brokers.amqp import copies, envelope, letters, topology
from celeriac.brokers.amqp.admin import AmqpAdmin
from celeriac.brokers.amqp.connection import CONNECT_TIMEOUT, DEFAULT_HEARTBEAT, AmqpConnection
from celeriac.brokers.amqp.consume import Buffer, Held, deadline, narrower
from celeriac.brokers.amqp.delegated import InStateStore
from celeriac.brokers.amqp.params import AmqpParams, Incoming, Outgoing
from celeriac.brokers.amqp.state import ReturnNote
from celeriac.brokers.base import (
    DeadLetter,
    Delivery,
    OutgoingMessage,
    QueueStats,
    check_priority,
    max_deliveries_reason,
)
from celeriac.brokers.ids import MessageIds
from celeriac.exceptions import CeleriacError, ConfigurationError
from celeriac.validators import AMQP_SCHEMES

T = TypeVar("T")

log = logging.getLogger("celeriac.amqp")

#: How long a redelivered copy waits for its return notes before it is handed out
#: uncharged (a supervisor writes them within milliseconds of its child's death).
NOTE_WAIT = 1.0
#: How often the notes of held-back copies are looked up again.
NOTE_POLL = 0.05
#: Longest a fetch waits for the deliveries RabbitMQ is about to push (a new consumer,
#: a requeue): without it a fetch right after a subscribe hands out whatever came first.
WINDOW_WAIT = 0.05
#: Longest a fetch that found nothing waits for messages RabbitMQ says are ready (they
#: arrive within milliseconds unless another process took them first).
SERVER_WAIT = 0.25
#: Fewest unacked deliveries RabbitMQ may push to a consumer of this process. The
#: buffer orders by priority only what it holds (quorum queues on RabbitMQ before 4.0
#: have no priorities), so it holds a few more than the worker can start at once.
PREFETCH_FLOOR = 10
#: Most deliveries taken from the connection at once.
TAKE_BATCH = 1000

_ids = MessageIds()


class AmqpBroker(AmqpAdmin, InStateStore):
    """Messages on RabbitMQ, the rest in a Redis or SQLite state store."""

    schemes = AMQP_SCHEMES
    knows_lost_claims = True

    def __init__(self, url: str, *, max_deliveries: int = 5, poll_interval: float = 0.05,
                 pool_limit: int = 32) -> None:
        super().__init__(url, max_deliveries=max_deliveries, poll_interval=poll_interval,
                         pool_limit=pool_limit)
        self._params = AmqpParams.from_url(self._base_url)
        self._lock = threading.Lock()
        self._subscribing = threading.Lock()
        self._conn: AmqpConnection | None = None
        self._pid = -1
        self._reset()

    def _reset(self) -> None:
        """Per-process state: a forked child starts with nothing of its parent's."""
        self._pid = os.getpid()
        self._buffer = Buffer()
        self._declared: set[str] = set()
        self._ladder = False
        self._consumed: set[str] = set()
        self._prefetch = 0
        #: Messages believed ready on the server in the queues this process consumes (those
        #: ready when it subscribed, and those it published or requeued there since, less
        #: what arrived): what RabbitMQ will push as soon as the prefetch has room.
        self._backlog = 0
        #: When this process last made room in its prefetch (0: not since the last fetch).
        self._room_made = 0.0
        self._last_note_poll = 0.0

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._reset()

    # -- configuration -------------------------------------------------------------------

    def configure(self, options: Mapping[str, Any]) -> None:
        super().configure(options)
        ssl = options.get("use_ssl")
        if ssl:
            self._params = AmqpParams.from_url(self._base_url, ssl=ssl)

    def retry_for(self, seconds: float | None) -> None:
        super().retry_for(seconds)
        if self._conn is not None:
            self._conn.patience = 1e9 if seconds is None else seconds

    @property
    def queue_type(self) -> str:
        value = str(self._options.get("queue_type") or topology.QUORUM)
        if value not in (topology.QUORUM, topology.CLASSIC):
            raise ConfigurationError(f"broker_queue_type must be 'quorum' or 'classic', got {value!r}")
        return value

    @property
    def conn(self) -> AmqpConnection:
        if self._conn is None:
            heartbeat = self._options.get("heartbeat", DEFAULT_HEARTBEAT)
            timeout = self._options.get("connection_timeout")
            self._conn = AmqpConnection(
                self._params, heartbeat=float(heartbeat or 0),
                patience=1e9 if self._patience is None else self._patience,
                connect_timeout=float(timeout) if timeout else CONNECT_TIMEOUT)
        return self._conn

    # -- topology --------------------------------------------------------------------------

    def _declare(self, queues: Collection[str], *, ladder: bool = False) -> None:
        new = [queue for queue in queues if queue not in self._declared]
        # With the first queue: declaring the ladder when the first delayed message is
        # sent would make that message late by as much.
        if (ladder or new) and not self._ladder:
            topology.declare_ladder(self.conn)
            self._ladder = True
        if not new:
            return
        priority = self._options.get("max_priority")
        for queue in new:
            topology.declare_queue(self.conn, queue, self.queue_type,
                                   max_priority=int(priority) if priority else None)
        if self._store_ready():
            self.state.add_queues(new)
        self._declared.update(new)

    # -- producing -----------------------------------------------------------------------

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        for message in messages:
            check_priority(message)
        if not messages:
            return []
        with self._lock:
            self._check_pid()
        # Declared first: the first delayed message declares the ladder (~0.3 s), which
        # must not eat into its delay.
        self._declare({message.queue for message in messages},
                      ladder=any(message.eta is not None for message in messages))
        ids = _ids.take(len(messages))
        now = time.time()
        outgoing, scheduled = [], []
        for message_id, message in zip(ids, messages, strict=True):
            body, headers, properties = envelope.to_amqp(message.body)
            headers[copies.ID] = message_id
            headers[copies.STAMP] = time.time_ns()
            properties["priority"] = message.priority
            delay = 0.0 if message.eta is None else message.eta - now
            copy, due = copies.addressed(message.queue, body, headers, properties,
                                         queue_type=self.queue_type, delay=delay)
            outgoing.append(copy)
            if due is not None:
                scheduled.append((message.queue, message_id, due))
        if scheduled:
            self.state.add_scheduled(scheduled)
        self.conn.publish(outgoing)
        if self._consumed:
            self._announce(sum(1 for message in messages if message.queue in self._consumed
                               and (message.eta is None or message.eta <= now)))
        return ids

    # -- consuming -------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], count: int, *, consumer: str, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        if not queues or count <= 0:
            return []
        wanted = set(queues)
        with self._lock:
            self._check_pid()
        end = time.monotonic() + timeout
        # A process that holds claims (a busy worker) comes back for more within
        # milliseconds: it never waits past its timeout for messages RabbitMQ may not push
        # yet (a quorum queue tops up a consumer's credit in steps, not per ack), or every
        # fetch would stall its loop, and the settling of finished tasks with it.
        with self._lock:
            asked = bool(self._buffer.claims)
        while True:
            self._subscribe(wanted, count)
            got = self._fetch_once(wanted, count, consumer, lease)
            if got:
                return got
            if not asked:
                # Nothing here: does RabbitMQ have some it has not pushed yet (the buffer's
                # estimate is only an estimate)? Then wait for them rather than answer
                # "nothing" while messages are ready; once per call.
                asked = True
                ready = sum(topology.queue_ready_counts(self.conn, sorted(wanted)).values())
                if ready:
                    self._announce(ready)
                    self._subscribe(wanted, count)
                    self._fill_window(SERVER_WAIT)
                    continue
            now = time.monotonic()
            with self._lock:
                # Room was just made (an ack, a requeue): RabbitMQ is pushing the next
                # messages, if it has any. They are waited for even by a fetch that does
                # not wait, which would otherwise find an empty buffer while messages are
                # on their way, not yet counted anywhere.
                linger = (self._room_made + WINDOW_WAIT
                          if self._room_made and not self._buffer.claims else 0.0)
                self._room_made = 0.0
                soonest = self._buffer.next_deadline(now)
            left = max(end, linger) - now
            if left <= 0:
                return []
            wait = left if soonest is None else min(left, max(soonest, 0.005))
            self._receive(self.conn.take(TAKE_BATCH, timeout=wait))

    def _subscribe(self, queues: set[str], count: int) -> None:
        """Consume ``queues`` (too), with room for ``count`` more deliveries than are claimed."""
        with self._subscribing:
            with self._lock:
                prefetch = max(self._prefetch, len(self._buffer.claims) + count, PREFETCH_FLOOR)
                missing = queues - self._consumed
                if not missing and prefetch == self._prefetch:
                    return
                # A grown prefetch re-adds every consumer: more may come from each.
                counted = missing if prefetch == self._prefetch else queues | self._consumed
            self._declare(queues | self._consumed)
            # Counted before consuming: once the consumer exists, RabbitMQ pushes them and
            # a passive declare no longer counts them (its answer may even overtake them).
            ready = sum(topology.queue_ready_counts(self.conn, sorted(counted)).values())
            self.conn.consume(sorted(queues | self._consumed), prefetch)
            with self._lock:
                self._consumed |= queues
                self._prefetch = prefetch
            self._announce(ready)

    def _announce(self, arriving: int) -> None:
        """``arriving`` more messages are ready for this process's consumers."""
        with self._lock:
            self._backlog += arriving

    def _fetch_once(self, queues: set[str], count: int, consumer: str,
                    lease: float) -> list[Delivery]:
        self._receive(self.conn.take(TAKE_BATCH))
        self._fill_window()
        self._forget_stale()
        if self.conn.lapsed:  # just thawed: what the buffer holds is about to go stale
            return []
        self._resolve_notes()
        with self._lock:
            now = time.monotonic()
            self._buffer.expire(now)
            claimed: list[Held] = []
            spent: list[Held] = []
            for held in self._buffer.ready(queues, now):
                if len(claimed) == count:
                    break
                if held.charged + 1 > self.max_deliveries:
                    spent.append(held)
                    continue
                self._buffer.claim(held, consumer, deadline(lease))
                claimed.append(held)
            for held in spent:
                self._buffer.remove(held)
        if spent:
            self._bury(spent)
        return [self._delivery(held) for held in claimed]

    def _delivery(self, held: Held) -> Delivery:
        incoming = held.incoming
        # Where the message was sent, as its envelope tells (a delayed copy came from the
        # ladder's exchange with a routing key of bits).
        exchange, routing_key = topology.publish_target(held.queue, self.queue_type)
        body = envelope.from_amqp(incoming.body, incoming.headers, incoming.properties,
                                  exchange=exchange, routing_key=routing_key)
        return Delivery(id=held.id, queue=held.queue, body=body, delivery_count=held.charged + 1,
                        token=held.token, priority=held.priority, suspect=held.suspect)

    def _receive(self, incoming: Sequence[Incoming]) -> None:
        """Put deliveries from the connection in the buffer (or drop purged delayed ones)."""
        if not incoming:
            return
        purged = self._purged_arrivals(incoming)
        early = [(item, due) for item in incoming if (due := copies.foreign_due(item)) is not None]
        deferred = {id(item) for item, _ in early}
        now = time.monotonic()
        generation = self.conn.generation
        with self._lock:
            self._backlog = max(0, self._backlog - len(incoming))
            for item in incoming:
                if item.generation != generation:
                    continue  # its channel died since: RabbitMQ took it back
                if item in purged or id(item) in deferred:
                    continue
                charged = copies.as_int(item.headers.get(copies.CHARGED))
                suspect = copies.as_int(item.headers.get(copies.SUSPECT))
                self._buffer.add(Held(
                    id=copies.message_id(item), incoming=item, priority=copies.priority(item),
                    stamp=copies.stamp(item), charged=charged, suspect=suspect,
                    base_charged=charged, base_suspect=suspect,
                    unresolved=item.redelivered, hold_until=now + NOTE_WAIT))
        if purged:
            self._settle_tags(purged, acks=True)
        if early:
            self._defer_foreign(early)

    def _defer_foreign(self, early: Sequence[tuple[Incoming, float]]) -> None:
        """Foreign (Celery) messages published ahead of their eta go into the delay ladder
        until due, uncharged, instead of waiting unacked in this process (copies.foreign_due)."""
        self._declare((), ladder=True)
        now = time.time()
        due_of = {id(item): due for item, due in early}
        scheduled: list[tuple[str, str, float]] = []
        for generation, items in _group([item for item, _ in early]).items():
            outgoing, entries = [], []
            for item in items:
                copy, when = copies.again(item, charged=0, suspect=0, queue_type=self.queue_type,
                                          delay=due_of[id(item)] - now)
                outgoing.append(copy)
                entries.append((item.queue, copies.message_id(item), when or now))
            # False: the channel died first; RabbitMQ returns them and they come back here.
            if self.conn.settle(generation, acks=[item.delivery_tag for item in items],
                                publish=outgoing):
                scheduled.extend(entries)
        if scheduled:
            self.state.add_scheduled(scheduled)

    def _purged_arrivals(self, incoming: Sequence[Incoming]) -> list[Incoming]:
        """Delayed copies whose queue was purged after they were sent: dropped on arrival."""
        delayed = [item for item in incoming if copies.sent_at(item) is not None]
        if not delayed or not self._store_ready():
            return []
        marks = self.state.purged_at({item.queue for item in delayed})
        return [item for item in delayed
                if (copies.sent_at(item) or 0.0) <= marks.get(item.queue, float("-inf"))]

    def _fill_window(self, limit: float = 0.0) -> None:
        """Wait (briefly) for the deliveries RabbitMQ is about to push.

        Without it a fetch right after a subscribe, a publish or a requeue would hand out
        whatever arrived first instead of the oldest or most urgent message (or nothing),
        and a purge or stats would miss what is between the server and the buffer. If
        nothing comes within WINDOW_WAIT, the backlog was an overestimate (another process
        took the messages): it is forgotten.
        """
        with self._lock:
            room = self._prefetch * max(len(self._consumed), 1) - len(self._buffer.held)
            expected = min(self._backlog, room)
        end = time.monotonic() + (limit or WINDOW_WAIT)
        while expected > 0 and (left := end - time.monotonic()) > 0:
            got = self.conn.take(TAKE_BATCH, timeout=left)
            self._receive(got)
            expected -= len(got)
        if expected > 0:
            with self._lock:
                self._backlog = 0

    def _forget_stale(self) -> None:
        """Deliveries of a channel that died went back to RabbitMQ: note what they carried."""
        generation = self.conn.generation
        with self._lock:
            notes = self._buffer.drop_stale(generation)
        if notes:
            self.state.add_notes(notes)

    def _resolve_notes(self) -> None:
        """Read the return notes of redelivered copies; apply settles they carry."""
        with self._lock:
            waiting = self._buffer.unresolved()
            now = time.monotonic()
            if not waiting or now - self._last_note_poll < NOTE_POLL:
                return
            self._last_note_poll = now
        notes = self.state.read_notes({held.id for held in waiting})
        settles: list[tuple[Held, ReturnNote]] = []
        with self._lock:
            for held in waiting:
                mine = notes.get(held.id)
                if not mine:
                    continue
                held.unresolved = False
                held.notes = len(mine)
                for note in mine:
                    held.charged += note.charge
                    if note.suspect:
                        held.suspect = narrower(held.suspect, note.suspect)
                held.base_charged, held.base_suspect = held.charged, held.suspect
                settle = next((note for note in mine if note.settle), None)
                if settle is not None:
                    self._buffer.remove(held)
                    settles.append((held, settle))
        for held, note in settles:
            self._apply_settle(held, note)

    def _apply_settle(self, held: Held, note: ReturnNote) -> None:
        """Carry out a settle another process asked for (the supervisor's, for a killed child)."""
        if note.settle == "ack":
            self._settle_helds([held])
        elif note.settle == "dead":
            self._settle_helds([held], publish=[copies.dead(held.incoming, reason=note.reason,
                                                            deliveries=held.charged + 1)])
        else:
            copy, due = copies.again(held.incoming, charged=held.charged + 1, suspect=held.suspect,
                                     queue_type=self.queue_type, delay=note.delay)
            self._schedule([(held, due)])
            self._settle_helds([held], publish=[copy])

    def _bury(self, spent: Sequence[Held]) -> None:
        """Dead-letter copies over their delivery limit (found at fetch)."""
        for held in spent:
            reason = max_deliveries_reason(self.max_deliveries, suspect=held.suspect == 1)
            self._settle_helds([held], publish=[copies.dead(held.incoming, reason=reason,
                                                            deliveries=held.charged)])

    # -- settling ----------------------------------------------------------------------------

    def lost(self, deliveries: Sequence[Delivery]) -> list[bool]:
        with self._lock:
            self._check_pid()
        self._forget_stale()  # a channel that died since the last look
        with self._lock:
            return [self._buffer.is_ours(d.token) and self._buffer.claim_of(d.token) is None
                    for d in deliveries]

    def _orphans(self, deliveries: Sequence[Delivery], *, ran: bool) -> None:
        """Note what the consumer says of claims whose channel died (they are refused)."""
        with self._lock:
            if not self._buffer.orphans:
                return
            notes = [note for d in deliveries
                     if (note := self._buffer.orphan_note(d.token, ran=ran)) is not None]
        if notes:
            self.state.add_notes(notes)

    def _live(self, deliveries: Sequence[Delivery]) -> list[Held | None]:
        with self._lock:
            self._check_pid()
            generation = self.conn.generation
            result: list[Held | None] = []
            seen: set[int] = set()
            for delivery in deliveries:
                held = self._buffer.claim_of(delivery.token)
                if held is None or held.id != delivery.id or delivery.token in seen:
                    result.append(None)
                    continue
                seen.add(delivery.token)
                if held.generation != generation:
                    result.append(None)
                    continue
                result.append(held)
            return result

    def _settle_helds(self, helds: Sequence[Held], *, publish: Sequence[Outgoing] = ()
                      ) -> list[bool]:
        """Ack ``helds``, publishing ``publish[i]`` (if given) in the same transaction as the
        ack of ``helds[i]``: one ``tx.commit`` per channel generation. Per held, whether it
        was applied (False: its channel died, RabbitMQ returned it, nothing was sent)."""
        copies_: list[Outgoing | None] = list(publish) if publish else [None] * len(helds)
        pairs = list(zip(helds, copies_, strict=True))
        applied: dict[int, bool] = {}
        for generation, group in _by_generation(pairs).items():
            ok = self.conn.settle(generation, acks=[held.incoming.delivery_tag for held, _ in group],
                                  publish=[copy for _, copy in group if copy is not None])
            applied.update((id(held), ok) for held, _ in group)
        with self._lock:
            for held in helds:
                self._buffer.remove(held)
            self._room_made = time.monotonic()
        noted = {held.id: held.notes for held in helds if held.notes and applied[id(held)]}
        if noted:
            self.state.drop_notes(noted)
        return [applied[id(held)] for held in helds]

    def _settle_tags(self, incoming: Sequence[Incoming], *, acks: bool) -> None:
        for generation, items in _group(incoming).items():
            self.conn.settle(generation, acks=[item.delivery_tag for item in items] if acks else ())

    def _foreign(self, deliveries: Sequence[Delivery], note: ReturnNote) -> list[bool] | None:
        """Settles of another instance's claims (the supervisor's): written as notes."""
        if not deliveries or not all(not self._buffer.is_ours(d.token) and d.token >> 40
                                     for d in deliveries):
            return None
        self.state.add_notes([(delivery.id, note) for delivery in deliveries])
        return [True] * len(deliveries)

    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        foreign = self._foreign(deliveries, ReturnNote(settle="ack"))
        if foreign is not None:
            return foreign
        self._orphans(deliveries, ran=True)
        live = self._live(deliveries)
        helds = [held for held in live if held is not None]
        return _per_delivery(live, self._settle_helds(helds))

    def renew(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        self._forget_stale()
        self._orphans(deliveries, ran=True)  # renewed: running (a waiting one is asked lost())
        live = self._live(deliveries)
        with self._lock:
            for held in live:
                if held is not None:
                    held.deadline = deadline(lease)
        return [held is not None for held in live]

    def requeue(self, deliveries: Sequence[Delivery], *, delay: float = 0.0,
                uncharge: bool = False) -> list[bool]:
        foreign = self._foreign(deliveries, ReturnNote(settle="requeue", delay=delay,
                                                       charge=0 if uncharge else 1))
        if foreign is not None:
            return foreign
        self._orphans(deliveries, ran=not uncharge)
        live = self._live(deliveries)
        helds = [held for held in live if held is not None]
        if not helds:
            return [False] * len(live)
        if delay > 0:
            self._declare((), ladder=True)
        outgoing, due = [], []
        for held in helds:
            copy, when = copies.again(held.incoming, charged=held.charged + (0 if uncharge else 1),
                                      suspect=held.suspect, queue_type=self.queue_type, delay=delay)
            outgoing.append(copy)
            due.append((held, when))
        self._schedule(due)
        applied = self._settle_helds(helds, publish=outgoing)
        if delay <= 0:
            self._announce(sum(1 for held, ok in zip(helds, applied, strict=True)
                               if ok and held.queue in self._consumed))
        return _per_delivery(live, applied)

    def _schedule(self, due: Sequence[tuple[Held, float | None]]) -> None:
        entries = [(held.queue, held.id, when) for held, when in due if when is not None]
        if entries:
            self.state.add_scheduled(entries)

    def dead_letter(self, deliveries: Sequence[Delivery], reason: str) -> list[bool]:
        foreign = self._foreign(deliveries, ReturnNote(settle="dead", reason=reason))
        if foreign is not None:
            return foreign
        self._orphans(deliveries, ran=True)
        live = self._live(deliveries)
        helds = [held for held in live if held is not None]
        if not helds:
            return [False] * len(live)
        outgoing = [copies.dead(held.incoming, reason=reason, deliveries=held.charged + 1)
                    for held in helds]
        return _per_delivery(live, self._settle_helds(helds, publish=outgoing))

    def release_consumer(self, consumer: str, *, started: Collection[str] = (),
                         suspects: Collection[str] = (), group: int = 1) -> int:
        with self._lock:
            self._check_pid()
            if consumer in self._buffer.consumers():
                return self._buffer.release(consumer, set(started), set(suspects), group)
        # Another process's consumer (the supervisor's dead child): RabbitMQ returned its
        # deliveries when its connection closed; their next holder reads these notes.
        ids = {*started, *suspects}
        if not ids:
            return 0
        self.state.add_notes([(message_id, ReturnNote(
            charge=1 if message_id in started else 0,
            suspect=max(group, 1) if message_id in suspects else 0)) for message_id in ids])
        return len(ids)

    # -- inspection and maintenance ---------------------------------------------------------

    def stats(self) -> dict[str, QueueStats]:
        with self._lock:
            self._check_pid()
        self._receive(self.conn.take(TAKE_BATCH))
        self._fill_window()
        names = self.state.queues() | self._declared
        if not names:
            return {}
        ordered = sorted(names)
        ready = topology.queue_ready_counts(self.conn, ordered)
        dead = topology.queue_ready_counts(self.conn, [topology.dead_queue(q) for q in ordered])
        scheduled = self.state.scheduled_counts(ordered, time.time())
        paused = self.paused()
        with self._lock:
            here = self._buffer.counts(ordered)
        return {queue: QueueStats(ready=ready.get(queue, 0) + here[queue][0],
                                  scheduled=scheduled.get(queue, 0), in_flight=here[queue][1],
                                  dead=dead.get(topology.dead_queue(queue), 0),
                                  paused=queue in paused)  # oldest_age: RabbitMQ cannot tell
                for queue in ordered}

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        names = sorted(self.state.queues() | self._declared) if queue is None else [queue]
        return letters.dead_letters(self.conn, names, limit)

    def purge(self, queue: str | None = None) -> int:
        with self._lock:
            self._check_pid()
        names = sorted(self.state.queues() | self._declared) if queue is None else [queue]
        if not names:
            return 0
        self._receive(self.conn.take(TAKE_BATCH))
        self._fill_window()
        now = time.time()
        self.state.mark_purged(names, now)
        scheduled = sum(self.state.scheduled_counts(names, now).values())
        self.state.clear_scheduled(names)
        with self._lock:
            buffered = self._buffer.unclaimed(set(names))
        if buffered:
            self._settle_helds(buffered)
        purged: int = topology.purge_queues(self.conn, names)
        return purged + len(buffered) + scheduled

    def ping(self) -> None:
        """Check RabbitMQ and the state store (a worker or beat cannot do without one:
        ConfigurationError saying what to set); the first ping of a process also
        declares the delay ladder (~0.4 s on a new vhost), so the first delayed message
        sent after it is not late by as much."""
        with self._lock:
            self._check_pid()
        self._declare((), ladder=True)
        self.store.ping()

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._hand_back()
            self._conn.close()
        if self._store_broker is not None:
            self._store_broker.close()

    def _hand_back(self) -> None:
        """Give the deliveries still waiting in the buffer back to their queues, as they were.

        Closing the channel would return them too, but flagged redelivered and with no
        notes, so their next holder would wait for notes that never come (NOTE_WAIT)
        before running them: a republished copy of each is ready at once.
        """
        with self._lock:
            waiting = [held for held in self._buffer.held.values() if not held.token]
        if not waiting or not self.conn.connected:
            return
        copies_back = [copies.again(held.incoming, charged=held.charged, suspect=held.suspect,
                                    queue_type=self.queue_type)[0] for held in waiting]
        try:
            self._settle_helds(waiting, publish=copies_back)
        except CeleriacError as exc:  # they come back with the channel anyway
            log.warning("could not hand back %d prefetched message(s) on close: %s", len(waiting), exc)



def _by_generation(pairs: Sequence[tuple[Held, Outgoing | None]]
                   ) -> dict[int, list[tuple[Held, Outgoing | None]]]:
    groups: dict[int, list[tuple[Held, Outgoing | None]]] = {}
    for held, copy in pairs:
        groups.setdefault(held.generation, []).append((held, copy))
    return groups


def _per_delivery(live: Sequence[Held | None], applied: Sequence[bool]) -> list[bool]:
    """Spread the results of the live deliveries' settle over every delivery asked about."""
    results = iter(applied)
    return [held is not None and next(results) for held in live]


def _group(incoming: Sequence[Incoming]) -> dict[int, list[Incoming]]:
    groups: dict[int, list[Incoming]] = {}
    for item in incoming:
        groups.setdefault(item.generation, []).append(item)
    return groups

