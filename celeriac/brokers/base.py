"""The broker interface every transport implements.

A broker stores opaque message bodies in named queues and hands them out under
*leases*. Delivery is at-least-once: a fetched message stays in the broker,
reserved for one consumer, until that consumer acks it; if the consumer dies
or stops renewing, the message becomes available again. Each claim increments a
per-message *fencing token*; ``ack``, ``nack``, ``requeue`` and ``renew`` only act
when the token still matches, so a frozen consumer that wakes up after its lease
was handed to someone else cannot touch the message any more.

Brokers are synchronous and thread-safe. They never carry a connection across
``fork()``. Under a green pool the worker calls them through
:func:`celeriac.blocking.offload`, so a call that would block the event loop
(SQLite) runs on a real thread instead.

The contract test suite in ``tests/contract/test_broker.py`` runs over every
implementation; a new transport is done when it passes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celeriac.brokers.browse import DeletableKind, Kind, MessageSummary, Page
from celeriac.brokers.metrics import DEFAULT_RETENTION, MetricRow
from celeriac.exceptions import ConfigurationError
from celeriac.fastjson import dumps, loads

__all__ = ["MessageSummary", "Page"]  # re-exported: the read model lives in browse.py


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to publish."""

    queue: str
    body: bytes
    #: 0-9; higher runs first.
    priority: int = 0
    #: Unix time before which the message is not delivered (countdown/eta), or None.
    eta: float | None = None


def check_priority(message: OutgoingMessage) -> None:
    """Reject priorities outside 0-9 before anything is stored.

    Every broker only claims priorities 9 to 0, so a message with priority 12
    would otherwise sit in the store unseen forever.
    """
    priority = message.priority
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ConfigurationError(
            f"message priority must be an integer from 0 to 9, got {priority!r}")


@dataclass(frozen=True)
class Delivery:
    """One claimed message, as handed to a consumer."""

    #: Broker-assigned id, unique within the broker (not the task id).
    id: str
    queue: str
    body: bytes
    #: How many times the message has been claimed, this claim included.
    delivery_count: int
    #: Fencing token of this claim; ack/nack/requeue/renew must present it.
    token: int
    priority: int = 0
    #: 0, or the message is *suspect*: it was released from a dead worker process that
    #: ran it beside other tasks, and has not run to completion since. Nobody can tell
    #: which of them killed the process, so the consumer runs it in a smaller group:
    #: at most this many tasks (itself included) in its process while it runs. Each
    #: crash of a group halves it, so a poison task is run alone within a few crashes
    #: (1: alone, and a crash then is its own) while its innocent neighbours complete
    #: in the groups that did not hold it.
    suspect: int = 0


def max_deliveries_reason(limit: int, *, suspect: bool) -> str:
    """The dead-letter reason of a message that would pass ``limit`` deliveries.

    A suspect message whose group is down to 1 is charged only for crashes while it
    runs alone, so its last deliveries ended with its own worker process dying: the
    reason says so (``suspect``), which tells an operator it is a poison task and not
    a victim of its neighbours.
    (The Redis broker's ``lua/fetch.lua`` builds the same text on the server.)
    """
    reason = f"max deliveries ({limit}) exceeded"
    if suspect:
        reason += "; it crashed its worker process while running alone"
    return reason


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be processed, kept with the reason."""

    id: str
    queue: str
    body: bytes
    reason: str
    delivery_count: int
    failed_at: float


@dataclass
class QueueStats:
    """Counts for one queue, as shown by ``celeriac status``."""

    #: Available to fetch now.
    ready: int = 0
    #: Waiting for their eta/countdown.
    scheduled: int = 0
    #: Claimed by a consumer and not yet acked.
    in_flight: int = 0
    #: In the dead-letter store.
    dead: int = 0
    #: Seconds the oldest ready message has waited (None: nothing ready, or unknown).
    #: A measurement that changes by the second, so stats compare equal without it.
    oldest_age: float | None = field(default=None, compare=False)
    #: Paused with :meth:`Broker.pause`: it takes messages, workers do not fetch from it.
    paused: bool = False

    def as_dict(self) -> dict[str, int]:
        return {"ready": self.ready, "scheduled": self.scheduled,
                "in_flight": self.in_flight, "dead": self.dead}


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker as recorded by its heartbeat."""

    name: str
    info: dict[str, Any] = field(default_factory=dict)
    last_seen: float = 0.0


#: Worker events a broker keeps: the newest this many; older ones are dropped.
EVENTS_KEPT = 10_000


@dataclass(frozen=True)
class WorkerEvent:
    """Something a worker node reports for monitors (``celeriac events``, the dashboard):
    the types in :data:`celeriac.middleware.events.EVENT_TYPES`. ``data`` is JSON
    (brokers store it as text)."""

    type: str
    worker: str
    data: dict[str, Any] = field(default_factory=dict)
    #: Unix time the event happened (0: the broker stamps the time of ``emit``).
    time: float = 0.0
    #: Assigned by the broker on :meth:`Broker.emit`, increasing; 0 before that.
    seq: int = 0


def encode_event(kind: str, worker: str, data: dict[str, Any], when: float) -> bytes:
    """One event as a line of :meth:`Broker.emit_encoded`: compact JSON of its type,
    worker, data and time, which never holds a raw line break. ``default=str``: an
    event must not fail because of one odd value in ``data``."""
    return dumps({"type": kind, "worker": worker, "data": data, "time": when}, default=str)


@dataclass(frozen=True)
class Revocation:
    """A revoked task id, kept in the broker until ``expires`` so that every worker,
    including one started later, refuses to run it."""

    task_id: str
    #: Unix time after which the broker forgets the revocation.
    expires: float
    #: Also stop the task if it is running (``revoke(terminate=True)``).
    terminate: bool = False
    #: The signal name asked for with terminate (Celery's ``signal=``), e.g. "SIGTERM".
    signal: str = "SIGTERM"
    #: Assigned by the broker on :meth:`Broker.revoke`, increasing; 0 before that.
    seq: int = 0


@dataclass(frozen=True)
class ControlCommand:
    """One remote-control command in the broker's broadcast stream."""

    #: Assigned by the broker on :meth:`Broker.broadcast`, increasing.
    seq: int
    #: JSON object: the command, its arguments, its destination and where to reply.
    body: dict[str, Any]
    #: Unix time it was broadcast.
    time: float


#: The keys of :meth:`Broker.configure`'s options, with the setting each comes from:
#: ``state_url`` (``broker_state_url``), ``result_backend`` (``result_backend``, the
#: state store's default), ``queue_type`` (``broker_queue_type``), ``heartbeat``
#: (``broker_heartbeat``), ``use_ssl`` (``broker_use_ssl``), ``connection_timeout``
#: (``broker_connection_timeout``), ``max_priority`` (``task_queue_max_priority``).
OPTION_NAMES = ("state_url", "result_backend", "queue_type", "heartbeat", "use_ssl",
                "connection_timeout", "max_priority")

#: Control commands a broker keeps: the newest this many.
COMMANDS_KEPT = 1000


def note_stored(exc: BaseException, stored: int, total: int, *, unsure: int = 0) -> None:
    """Say on ``exc`` how many of a bulk send's ``total`` messages were stored before it
    (``unsure``: how many after those may have been: sent, with no reply)."""
    text = f"{stored} of {total} messages were published (in earlier chunks) before this failure; "
    text += (f"the next {unsure} may have been (sent, no reply), the others were not" if unsure
             else "the others were not")
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(text)


class Broker(ABC):
    """Stores messages in queues and hands them out under leases."""

    #: URL scheme(s) this broker serves, e.g. ``("sqlite",)``.
    schemes: tuple[str, ...] = ()
    #: True when the broker can be shared by separate processes (not memory://).
    shared_between_processes: bool = True
    #: True when :meth:`lost` can tell a claim is gone without asking the server.
    knows_lost_claims: bool = False

    def __init__(self, url: str, *, max_deliveries: int = 5, poll_interval: float = 0.05,
                 pool_limit: int = 32) -> None:
        self.url = url
        #: Most connections this process opens to a networked broker (``broker_pool_limit``).
        self.pool_limit = pool_limit
        self.max_deliveries = max_deliveries
        self.poll_interval = poll_interval
        #: How many worker events the broker keeps (the newest ones).
        self.events_kept = EVENTS_KEPT
        #: How many control commands the broker keeps (the newest ones).
        self.commands_kept = COMMANDS_KEPT
        #: Seconds metric rows are kept (``worker_metrics_retention``).
        self.metrics_retention = DEFAULT_RETENTION

    # -- producing -------------------------------------------------------------------
    @abstractmethod
    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Store ``messages`` atomically (all or none) and return their broker ids in order."""

    def publish_chunks(self, chunks: Sequence[Sequence[OutgoingMessage]]) -> None:
        """Store each chunk as one :meth:`publish` would (all or none), in order: a bulk
        send. A broker may overlap the calls (Redis sends the next chunk while the
        server stores the one before). An error raised part way carries a note saying
        how many messages were stored before it. A bad priority anywhere is refused
        before anything is stored."""
        for chunk in chunks:
            for message in chunk:
                check_priority(message)
        stored = 0
        for chunk in chunks:
            try:
                self.publish(chunk)
            except Exception as exc:
                if stored:
                    note_stored(exc, stored, sum(map(len, chunks)))
                raise
            stored += len(chunk)

    # -- consuming -------------------------------------------------------------------
    @abstractmethod
    def fetch(self, queues: Sequence[str], count: int, *, consumer: str, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        """Claim up to ``count`` ready messages from ``queues`` for ``consumer``.

        Highest priority first, then oldest first, across all ``queues`` (so no
        listed queue is starved). Each claimed message gets a lease of ``lease``
        seconds, a new fencing token and ``delivery_count + 1``. A message whose
        count would exceed ``max_deliveries`` is moved to the dead-letter store
        instead, with reason ``"max deliveries (N) exceeded"`` (for a suspect
        message, ``"max deliveries (N) exceeded; it crashed its worker process
        while running alone"``: see :func:`max_deliveries_reason`), and not
        returned. Each delivery carries the message's suspect mark
        (:attr:`Delivery.suspect`), whichever way it became claimable.
        Messages whose lease expired are claimable again. If nothing is ready,
        wait up to ``timeout`` seconds for something to arrive (0: don't wait).
        """

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Remove finished messages; per delivery, False when its token is stale."""

    def lost(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Per delivery, True when this broker already knows its claim is gone, without
        asking the server: the consumer then does not start it (it runs elsewhere).

        Brokers whose claims only end on the server (memory, SQLite, Redis: a lease that
        ran out) know nothing locally: all False. The RabbitMQ broker knows a claim of a
        channel that died (RabbitMQ took its deliveries back)."""
        return [False] * len(deliveries)

    @abstractmethod
    def renew(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        """Extend leases to ``now + lease``; per delivery, False when its token is stale."""

    @abstractmethod
    def requeue(self, deliveries: Sequence[Delivery], *, delay: float = 0.0,
                uncharge: bool = False) -> list[bool]:
        """Make messages available again after ``delay`` seconds.

        ``uncharge=True`` takes this delivery off the message's delivery count:
        used when the worker hands back a message it never started.
        """

    @abstractmethod
    def dead_letter(self, deliveries: Sequence[Delivery], reason: str) -> list[bool]:
        """Move messages that cannot be processed to the dead-letter store with ``reason``."""

    @abstractmethod
    def release_consumer(self, consumer: str, *, started: Collection[str] = (),
                         suspects: Collection[str] = (), group: int = 1) -> int:
        """Make every message held by ``consumer`` available again at once.

        Called by the supervisor when a worker process died, so its messages do
        not wait for their leases to expire. Who pays for the crash:

        * ids in ``started`` keep the charge of their delivery: the supervisor
          knows the process died running them (alone), so a message that keeps
          killing its worker ends in the dead-letter store;
        * ids in ``suspects`` were running beside other tasks when the process
          died, and nobody can tell which one killed it: charging them all would
          dead-letter innocent neighbours of a poison task. So they are uncharged
          and *marked suspect* instead, with ``group`` (at least 1): the mark is
          stored with the message and comes back on every later delivery
          (:attr:`Delivery.suspect`) until the message is acked or dead-lettered,
          and a consumer runs a suspect message with at most ``group`` tasks in its
          process (itself included; 1: alone, so its next crash is charged to it).
          A message already marked with a smaller group keeps it. An id in both is
          charged and marked;
        * the others were never run: uncharged (their delivery count goes back
          down), their mark unchanged (a message already suspect stays suspect).

        Ids the consumer does not hold are ignored. Returns how many were released.
        """

    # -- inspection and maintenance --------------------------------------------------
    @abstractmethod
    def stats(self) -> dict[str, QueueStats]:
        """Counts per queue, for every queue that has or had a message or a dead letter."""

    @abstractmethod
    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters, of one queue or all."""

    @abstractmethod
    def purge(self, queue: str | None = None) -> int:
        """Delete ready and scheduled messages (not in-flight ones) of one queue or all."""

    # -- the dashboard's read model and admin actions (see celeriac.brokers.browse) ----
    @abstractmethod
    def browse(self, queue: str, kind: Kind, *, offset: int = 0, limit: int = 50) -> Page:
        """One page of a queue's ``ready``, ``scheduled``, ``retries`` or ``dead`` messages.

        Ready ones in the order a fetch claims them (priority, then oldest), scheduled
        ones and retries (delayed messages that are, or are not, a task's retry: its
        ``retries`` header above 0) due first, dead letters newest first. Costs
        O(``limit``) plus an index look-up on the shared brokers, never a scan of the
        queue; ``total`` is the size of the whole listing. A delayed message that came
        due and was not fetched yet is still listed as delayed.
        """

    @abstractmethod
    def requeue_dead(self, queue: str, ids: Sequence[str] | None) -> int:
        """Publish dead letters of ``queue`` again, ready now with no deliveries counted,
        and remove them from the dead-letter store; ``None``: all of the queue's.

        Ids that are not dead letters of ``queue`` are ignored. Returns how many.
        """

    @abstractmethod
    def delete_messages(self, queue: str, kind: DeletableKind,
                        ids: Sequence[str] | None) -> int:
        """Delete scheduled messages, retries or dead letters of ``queue`` (``None``: all
        of that kind); ids of another kind or queue are ignored. Returns how many."""

    @abstractmethod
    def enqueue_now(self, queue: str, ids: Sequence[str]) -> int:
        """Make scheduled messages or retries of ``queue`` ready now; returns how many
        (ids that are not delayed messages of ``queue`` are ignored)."""

    @abstractmethod
    def pause(self, queue: str) -> None:
        """Pause ``queue``: it keeps taking messages, but workers stop fetching from it
        (they look at :meth:`paused` about once a second)."""

    @abstractmethod
    def resume(self, queue: str) -> None:
        """Undo :meth:`pause` (nothing if the queue is not paused)."""

    @abstractmethod
    def paused(self) -> set[str]:
        """The paused queues: one cheap read (workers poll it)."""

    @abstractmethod
    def heartbeat(self, worker: str, info: dict[str, Any], ttl: float) -> None:
        """Record that ``worker`` is alive for ``ttl`` seconds, with ``info`` for status."""

    @abstractmethod
    def forget_worker(self, worker: str) -> None:
        """Remove a worker's heartbeat (clean shutdown)."""

    @abstractmethod
    def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat has not expired (expired records stay for :meth:`reap_workers`)."""

    @abstractmethod
    def reap_workers(self) -> list[WorkerInfo]:
        """Remove the records of workers whose heartbeat expired, and return them.

        A node that stops beating is dead (SIGKILLed, its machine gone) or frozen; a
        live node calls this at each of its heartbeats and releases what the dead
        one's worker processes held, so those messages need not wait for their
        leases. Each expired record is returned to one caller only, however many
        nodes call at once, so a dead node's messages are released once.
        """

    # -- worker events -----------------------------------------------------------------
    @abstractmethod
    def emit(self, events: Sequence[WorkerEvent]) -> None:
        """Store ``events`` atomically, each with a new, increasing ``seq``.

        The ``seq`` of the given events is ignored. The store is capped: only
        the newest :data:`EVENTS_KEPT` (``events_kept``) events are kept, so it
        never grows without bound.
        """

    def emit_encoded(self, lines: Sequence[bytes]) -> None:
        """Store events already encoded, one per line as :func:`encode_event` writes them,
        as :meth:`emit` stores events.

        A worker with ``-E`` encodes each task event as it makes it, while its fields are
        fresh in the CPU's cache, and buffers bytes, which the garbage collector does not
        walk. This default decodes them for :meth:`emit`; Redis stores the lines as
        they are.
        """
        events = []
        for line in lines:
            fields = loads(line)
            events.append(WorkerEvent(type=fields["type"], worker=fields["worker"],
                                      data=fields["data"], time=fields["time"]))
        self.emit(events)

    @abstractmethod
    def events(self, after: int = 0, limit: int = 100) -> list[WorkerEvent]:
        """Stored events with ``seq > after``, oldest first, at most ``limit``.

        To follow the stream, pass the ``seq`` of the last event seen as ``after``.
        """

    def events_of(self, task_id: str, after: int, until: int) -> list[WorkerEvent]:
        """The stored events about ``task_id`` (their ``uuid``) with ``after < seq <=
        until``, oldest first: how a task's timeline is read back from the capped log.

        This default reads every event of the range and keeps the task's; a broker that
        can filter where the events are stored (SQLite: in SQL, before any row is decoded)
        overrides it.
        """
        return [event for event in self.events(after, max(0, until - after))
                if event.data.get("uuid") == task_id]

    def newest_event_seq(self) -> int:
        """The ``seq`` of the newest stored event (0: none), where a reader starts to
        look back at the log (the dashboard's live tail, a task's timeline).

        This default needs only :meth:`events`, which reads forwards from a cursor:
        O(log seq) reads of one event each (find a ``seq`` with nothing after it by
        doubling, then bisect). Brokers that have the newest ``seq`` at hand (a max of
        an indexed column, the top of a sorted set) override it with one read.
        """
        def exists(after: int) -> bool:
            return bool(self.events(after, 1))

        if not exists(0):
            return 0
        low, high = 0, 1  # an event exists after low; find a high with none after it
        while exists(high):
            low, high = high, high * 2
        while high - low > 1:  # invariant: exists(low), not exists(high)
            middle = (low + high) // 2
            if exists(middle):
                low = middle
            else:
                high = middle
        return high

    # -- revoke ----------------------------------------------------------------------
    @abstractmethod
    def revoke(self, revocations: Sequence[Revocation]) -> None:
        """Store ``revocations`` atomically (all or none), each with a new, increasing ``seq``.

        The ``seq`` of the given revocations is ignored. Revocations have one
        sequence per broker, independent of the events' one. Revoking an id
        again stores a new entry with a newer ``seq`` (earlier entries for that
        id stay until they expire), so a later ``terminate=True`` reaches the
        workers that already saw the plain revoke. An entry whose ``expires`` has
        passed is never returned again; expired entries are deleted lazily, by
        later calls (every broker on ``revoke``, some also on ``revocations``), so
        the store never grows without bound. The Redis broker compares
        ``expires`` with the server's clock, the others with this machine's.
        """

    @abstractmethod
    def revocations(self, after: int = 0, limit: int = 1000) -> list[Revocation]:
        """Unexpired revocations with ``seq > after``, oldest (lowest ``seq``) first, at most ``limit``.

        A worker calls this at start with ``after=0`` (every revocation still in
        force) and then every half second or so with the ``seq`` of the last
        one it saw, so it is one cheap round trip: one SQL statement, one Redis
        call. A ``seq`` only becomes visible once every lower one is, so a cursor
        never skips a revocation.
        """

    # -- remote control ----------------------------------------------------------------
    @abstractmethod
    def broadcast(self, body: dict[str, Any]) -> int:
        """Append a command (a JSON object) to the control stream; return its ``seq``.

        Each command gets a new, increasing ``seq`` (its own sequence, independent
        of events and revocations) and the time of the call. The stream is capped:
        only the newest :data:`COMMANDS_KEPT` (``commands_kept``) commands are kept.
        A call retried after a lost connection does not append the command twice.
        """

    @abstractmethod
    def commands(self, after: int, limit: int = 100) -> list[ControlCommand]:
        """Kept commands with ``seq > after``, oldest first, at most ``limit``.

        To follow the stream, pass the ``seq`` of the last command seen as
        ``after``; a reader that fell more than ``commands_kept`` behind resumes
        at the oldest kept command.
        """

    @abstractmethod
    def command_cursor(self) -> int:
        """The ``seq`` of the newest command ever broadcast (0 when none).

        Where a worker that starts now begins reading with :meth:`commands`, so
        that it never runs commands broadcast before it existed.
        """

    @abstractmethod
    def reply(self, reply_to: str, body: dict[str, Any], ttl: float = 60.0) -> None:
        """Add ``body`` (a JSON object) to the reply box named ``reply_to``.

        The box, with every reply still in it, is deleted ``ttl`` seconds after
        its latest reply (each reply sets the box's expiry anew), so replies
        nobody collects do not pile up. A call retried after a lost connection
        does not add the reply twice.
        """

    @abstractmethod
    def replies(self, reply_to: str, *, timeout: float,
                count: int | None = None) -> list[dict[str, Any]]:
        """Collect the replies in box ``reply_to``, waiting up to ``timeout`` seconds.

        Returns every reply that is in the box or arrives before ``timeout``
        (0: don't wait), in arrival order. With ``count``, returns as soon as
        ``count`` replies were collected, and never more than ``count``: the
        rest stay in the box for a later call. Each reply is returned once:
        collecting removes it from the box. Replies may come from any process
        (for the memory broker, any thread) sharing the broker.
        """

    @abstractmethod
    def ping(self) -> None:
        """Check the broker is reachable; raise :class:`BrokerUnreachable` if not."""

    def retry_for(self, seconds: float | None) -> None:  # noqa: B027 - optional hook
        """How long a call waits out a lost connection before raising (None: forever).

        Worker processes pass None: their running tasks go on while the broker is
        away, and they pick up where they were when it is back. The supervisor
        passes a few seconds: it must keep watching its children meanwhile. Brokers
        without a connection to lose (memory, SQLite) have nothing to do.
        """

    def configure(self, options: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Take the app's settings that only some transports use (see :data:`OPTION_NAMES`).

        Called once by :func:`celeriac.brokers.broker_from_url`, before any other call.
        Brokers without such settings (memory, SQLite, Redis) ignore them.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections held by this process."""

    # == periodic tasks (beat): celeriac/beat/ =================================
    # Keep other features' methods outside this block (merges stay easy).
    @abstractmethod
    def beat_runs(self, names: Sequence[str]) -> dict[str, float]:
        """The last run time (Unix seconds) stored for each entry of ``names`` that has one."""

    @abstractmethod
    def beat_claim(self, name: str, previous: float | None, run_at: float,
                   messages: Sequence[OutgoingMessage]) -> bool:
        """Claim the run of entry ``name`` at ``run_at`` and publish its ``messages``, atomically.

        A compare-and-set on the entry's stored last run: when it is ``previous`` (None:
        the entry has none), store ``run_at`` and publish ``messages`` (possibly none) in
        the same step, and return True; otherwise change nothing and return False. So
        each run is claimed by one beat however many race for it, and a crash cannot
        separate the claim from the publish: a run is neither sent twice nor recorded
        as sent without its message. The time is compared exactly (a float as given).
        A call retried after a lost connection that had been applied returns False.
        """
    # == end of periodic tasks (beat) =================================================

    # == rate and concurrency limits (issue 11; see celeriac.brokers.limits) ==========
    @abstractmethod
    def take_rate_token(self, task: str, rate: float, burst: int, ticket: str) -> float:
        """Take a run of ``task`` under its cluster-wide limit of ``rate`` runs per second.

        Returns 0.0 when the caller may run it now. Otherwise the run is reserved
        for ``ticket`` (the message's broker id) at the next free time and the
        seconds until then are returned: the caller defers the message that long,
        and the same ticket presented then gets 0.0 without taking another run.
        ``burst`` runs may start back to back after a quiet spell. Atomic across
        every process sharing the broker (GCRA: :mod:`celeriac.brokers.limits`).
        """

    @abstractmethod
    def acquire_slot(self, task: str, limit: int, holder: str, ttl: float) -> bool:
        """Take one of ``limit`` cluster-wide running slots of ``task`` for ``holder``
        (the message's broker id) for ``ttl`` seconds; False when all are taken.

        Expired slots are freed first (a dead worker's slots come back that way); a
        holder that already has a slot keeps it and gets True.
        """

    @abstractmethod
    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        """Extend each (task, holder) slot still held to ``now + ttl``."""

    @abstractmethod
    def release_slot(self, task: str, holder: str) -> None:
        """Free ``holder``'s slot of ``task`` (nothing if it has none)."""

    @abstractmethod
    def slots_in_use(self, task: str) -> int:
        """How many unexpired slots of ``task`` are held now."""

    @abstractmethod
    def set_rate_limit(self, task: str, rate: str) -> None:
        """Store a run-time rate limit for ``task`` (``control rate_limit``) that every
        worker uses over the task's own; ``"0"`` means no limit."""

    @abstractmethod
    def rate_limits(self) -> dict[str, str]:
        """Every run-time rate limit stored with :meth:`set_rate_limit`, by task name."""
    # == end of rate and concurrency limits ============================================

    # == metric rollups (issue 14; see celeriac.brokers.metrics) =======================
    @abstractmethod
    def record_metrics(self, rows: Sequence[MetricRow]) -> None:
        """Add ``rows`` to the stored rows of the same minute and task name, and to each
        minute's total (task :data:`~celeriac.brokers.metrics.ALL_TASKS`), and the same to
        the rows of their hours, atomically, in one round trip.

        Rows of several processes add up (counts and histograms are sums). Rows older than
        ``metrics_retention`` seconds are deleted (by this call or by expiry); a minute (an
        hour) keeps at most :data:`~celeriac.brokers.metrics.MAX_TASK_NAMES` names, the runs of
        any further name are added to :data:`~celeriac.brokers.metrics.OTHER_TASKS`.
        """

    @abstractmethod
    def metrics(self, since: float, until: float, task: str | None = None, *,
                step: int = 60) -> list[MetricRow]:
        """Stored rows of the minutes (``step=3600``: the hours) from the one holding
        ``since`` to the one holding ``until`` (never older than ``metrics_retention``),
        oldest first.

        ``task=None``: every task name's rows (each period's sorted by name, totals left
        out); a name: that task's rows; :data:`~celeriac.brokers.metrics.ALL_TASKS`: the
        totals over every task. Periods nobody recorded have no row. Costs one lookup per
        period of the span (one round trip): O(periods x task names).
        """
    # == end of metric rollups ===========================================================
