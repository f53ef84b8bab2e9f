"""The AMQP connection of a process, owned by one native OS thread (issue 12, design §4).

Every read and write of the socket -- requests, deliveries, confirms, heartbeats --
happens on the *owner*, a thread of the OS started with
:func:`celeriac.blocking.start_native_thread`, never on a caller's thread:

* **py-amqp is not thread-safe**, and a lock around a shared connection would be
  held during blocking reads and stall every publisher behind a consumer.
* **Heartbeats must go out while the hub is blocked.** In a gevent process a
  connection driven from the hub stops beating when a task hogs the hub, and
  RabbitMQ resets it after two missed intervals (measured: heartbeat 2 s, hub
  blocked 7 s: "missed heartbeats from client"). A native owner keeps beating, so
  the server's heartbeat timeout only ends a process that is really gone or stopped.
* **Confirms and deliveries are read as they arrive**, not when the hub gets round
  to it: a publisher waiting for its confirm never waits for the hub.

Under gevent the owner's socket is gevent's (``socket`` is patched process-wide), which
then belongs to the owner thread's own hub: py-amqp runs unchanged there while the
main hub is blocked (measured 20 s). The owner waits with the OS's ``poll`` on the
socket and a wake-up pipe, so a request is taken up as soon as it is queued.

Callers put a request on the owner's queue and wait for its result through
:func:`celeriac.blocking.offload` (under a green pool or in a patched process the
wait runs on the hub's native thread pool, so the hub never blocks).

**Channel roles.** The owner keeps, per connection: a *confirm* channel for
publishing (a batch is published, then its confirms are awaited together: 154 µs
per message measured, against 1016 µs awaiting each), a *consume* channel in ``tx``
mode (deliveries of every subscribed queue; settling -- acks, rejects and
republishes -- is one ``tx.commit`` per batch, so an ack that returned True is known
applied) and a *control* channel for everything else (declares, purges). A channel
the server closes (an error on it) is replaced, never reused: py-amqp would reopen
it in place without its confirm or tx mode and its consumers.

**Generations.** Every consume channel gets a new generation number; deliveries
carry the one they came on, and settling a delivery of an older generation is
refused (False) without sending anything: its channel is gone, the server has
returned its messages, and a delivery tag of a dead channel would name another
message on the new one (tags restart at 1, channel numbers are reused: measured).

**Reconnecting.** When the connection drops the owner reconnects with backoff
(:class:`celeriac.reconnect.Reconnector`: one line when lost, one when back),
re-subscribes, and re-runs the requests that are safe to repeat (a publish whose
confirm was lost may therefore be stored twice: at-least-once, never lost).

**Fork.** A child never uses its parent's owner (there is no such thread in the
child, and the socket is the parent's): every call checks the pid and a child
starts over with a connection of its own. The parent's objects are left alone, never
closed from the child (closing would shut down the parent's socket).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import amqp
from amqp.exceptions import ChannelError, RecoverableConnectionError
from amqp.exceptions import ConnectionError as AmqpConnectionError

from celeriac.blocking import native_function, native_lock, native_poll, offload, start_native_thread
from celeriac.brokers.amqp.params import AmqpParams, Incoming, Outgoing
from celeriac.brokers.amqp.session import LATER, Request, Session, TrackedChannel
from celeriac.exceptions import BrokerError, BrokerUnreachable
from celeriac.reconnect import Reconnector, describe

T = TypeVar("T")

log = logging.getLogger("celeriac.amqp")

#: Seconds between heartbeats asked of the server (Celery's ``broker_heartbeat`` default).
DEFAULT_HEARTBEAT = 120.0
#: How long a call waits for the connection (or its answer) before it fails.
DEFAULT_PATIENCE = 20.0
CONNECT_TIMEOUT = 10.0
#: Longest the owner waits for the rest of a frame that has started to arrive.
READ_TIMEOUT = 5.0
#: Longest the owner sleeps between looks at its heartbeats and closing flag.
MAX_TICK = 1.0
#: Frames read in one go before queued requests get a turn.
READ_BURST = 256
#: Heartbeat intervals the owner may be late back from a poll before it takes its
#: connection for dead: only a stopped process (SIGSTOP, a suspended machine) is that
#: late, and the server has closed the connection by then (it allows about two missed
#: intervals) and requeued its deliveries, while the ones still in the socket buffer
#: would be read, handed out and run a second time before the close is seen.
FROZEN_BEATS = 2.0
#: What the client tells the server it understands. py-amqp's defaults minus
#: ``connection.blocked``: with it, py-amqp polls the socket before every publish.
CAPABILITIES = {"publisher_confirms": True, "exchange_exchange_bindings": True, "basic.nack": True,
                "consumer_cancel_notify": True, "authentication_failure_close": True,
                "per_consumer_qos": True}
#: Errors after which the connection is gone but the server may come back.
TRANSIENT: tuple[type[BaseException], ...] = (RecoverableConnectionError, OSError, EOFError)
#: Errors that end a connection that was up (also the server closing it on purpose).
_CONNECTION_LOST: tuple[type[BaseException], ...] = (*TRANSIENT, AmqpConnectionError)


def _new_ensure_lock() -> None:
    global _ensure_lock
    _ensure_lock = native_lock()


#: Serialises the first use per process (two threads must not both build the owner's state).
#: Made again in a forked child: a parent thread may have held it at the fork.
_ensure_lock = native_lock()
os.register_at_fork(after_in_child=_new_ensure_lock)


class _Closing(Exception):
    """Raised inside the owner to stop reconnecting: :meth:`AmqpConnection.close` was called."""


class AmqpConnection:
    """This process's connection to one RabbitMQ vhost, owned by a native thread.

    Thread-safe and green-safe: any thread or greenlet may call any method. The
    owner thread and the connection are made on first use (and again in a forked
    child). ``patience`` bounds how long a call waits for a connection that is down
    (then :class:`BrokerUnreachable`); the owner itself never gives up reconnecting.
    """

    def __init__(self, params: AmqpParams, *, name: str | None = None,
                 heartbeat: float = DEFAULT_HEARTBEAT, patience: float = DEFAULT_PATIENCE,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.params = params
        self._name = name
        self.heartbeat = heartbeat
        self.patience = patience
        self.connect_timeout = connect_timeout
        self._pid = -1  # the owner state is made by _ensure() for this pid
        self._wake_r = self._wake_w = -1
        # Never reset (not by close() nor in a child), so no generation is ever reused.
        self._generation = 0

    # -- the owner's state, per process ------------------------------------------------

    def _ensure(self) -> None:
        """Make (again, in a forked child) the state the owner thread and callers share."""
        if self._pid == os.getpid():
            return
        with _ensure_lock:
            if self._pid != os.getpid():
                self._make_state()

    def _make_state(self) -> None:
        # A child: the parent's session and thread are not ours. The session is dropped
        # unclosed (closing the socket would shut down the parent's connection); the
        # wake-up pipe's fds are this process's own copies.
        self._close_pipe()
        self._lock = native_lock()
        self._requests: deque[Request] = deque()
        self._running = False
        self._closing = False
        self._session: Session | None = None
        self._last_error = "not connected yet"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._exited = native_lock()
        self._stop_wait = native_lock()
        self._stop_wait.acquire()
        self._reconnector = Reconnector(self.params.where, BrokerUnreachable, None,
                                        transient=TRANSIENT, logger=log, sleep=self._pause)
        # Consuming, kept across reconnects.
        self._subscription: tuple[tuple[str, ...], int] | None = None
        self._inbox: deque[Incoming] = deque()
        self._received = 0  # deliveries put in the inbox (its length can't tell: takers pop it)
        self._takers: list[Any] = []  # native locks of callers waiting in take()
        # When the owner's current poll began (inf: not in one), and how long a poll may
        # take before the process is known to have been stopped (_serve).
        self._polling_since = math.inf
        self._lapse = math.inf
        self._pid = os.getpid()  # last: other threads use the state once they see it

    @property
    def name(self) -> str:
        """The ``connection_name`` the server shows (and a test closes the connection by)."""
        return self._name or f"celeriac {socket.gethostname()} pid {os.getpid()}"

    @property
    def connected(self) -> bool:
        """True while the owner has a live connection (in this process)."""
        return self._pid == os.getpid() and self._session is not None

    @property
    def lapsed(self) -> bool:
        """True while this process is back from being stopped past the heartbeat and the
        owner has not dropped the connection yet: every delivery it holds is about to be
        stale (the server has requeued them), so none should be handed out."""
        if self._pid != os.getpid():
            return False
        with self._lock:
            return self._lapsed()

    @property
    def generation(self) -> int:
        """The current consume channel's generation (0 before the first subscribe)."""
        self._ensure()
        return self._generation

    # -- calls --------------------------------------------------------------------------

    def call(self, fn: Callable[[Any], T], *, retry: bool = True, timeout: float | None = None) -> T:
        """``fn(channel)`` on the owner thread, with the control channel; its result.

        ``retry``: run it again on the next connection if this one drops before it
        finished (only for calls safe to repeat). Errors of the call are raised here;
        a channel error closes the control channel, which the next call replaces.
        """
        result: T = self._submit(lambda session, _request: fn(session.control()), retry, timeout)
        return result

    def publish(self, messages: Sequence[Outgoing], *, timeout: float | None = None) -> None:
        """Publish ``messages`` on the confirm channel and return once all are confirmed.

        One confirm round for the whole batch. A nack raises :class:`BrokerError`
        naming the queues; a connection lost before every confirm came in publishes
        the batch again on the next connection (so a message may be stored twice).
        """
        if not messages:
            return

        def run(session: Session, request: Request) -> object:
            channel = session.confirm_channel()
            # Registered before the first frame goes out: a confirm read while the batch
            # is still being written must find its request.
            session.confirms.add(request, [m.routing_key or m.exchange for m in messages])
            for message in messages:
                channel.basic_publish(message.message(), exchange=message.exchange,
                                      routing_key=message.routing_key)
            return LATER

        self._submit(run, True, timeout)

    def subscribe(self, queues: Sequence[str], prefetch: int, *, timeout: float | None = None) -> int:
        """Consume ``queues`` (replacing any earlier subscription) with ``prefetch``; the generation.

        A new consume channel is opened: the messages the old one held are returned
        by the server and its deliveries become stale. Kept across reconnects.
        """
        wanted = (tuple(queues), prefetch)

        def run(session: Session, _request: Request) -> int:
            self._subscription = None  # until the new one works (a missing queue fails it)
            self._open_consume(session, wanted)
            self._subscription = wanted
            return self._generation

        result: int = self._submit(run, True, timeout)
        return result

    def consume(self, queues: Sequence[str], prefetch: int, *, timeout: float | None = None) -> int:
        """Consume ``queues`` too, with a prefetch of at least ``prefetch``; the generation.

        Unlike :meth:`subscribe` this keeps the consume channel, and with it every
        delivery already received: queues are added to the subscription, never
        dropped, and the prefetch only grows. A grown prefetch is applied by
        cancelling and re-adding every consumer on the channel, because RabbitMQ
        applies a per-consumer ``basic.qos`` only to consumers started after it
        (measured on 3.10.8, quorum and classic: a consumer started with prefetch 2
        still held 2 after ``basic.qos(6)``). Unacked deliveries belong to the
        channel, not the consumer, so the cancel returns nothing.
        """
        def run(session: Session, _request: Request) -> int:
            held, had = self._subscription or ((), 0)
            wanted = (tuple(sorted({*held, *queues})), max(prefetch, had))
            channel = session.consume
            if channel is None:
                self._open_consume(session, wanted)
            else:
                fresh = wanted[1] != had
                if fresh:
                    channel.basic_qos(0, wanted[1], False)
                    for tag in session.consumer_tags.values():
                        channel.basic_cancel(tag)
                    session.consumer_tags.clear()
                for queue in wanted[0]:
                    if queue not in session.consumer_tags:
                        self._add_consumer(session, channel, queue, self._generation)
            self._subscription = wanted
            return self._generation

        result: int = self._submit(run, True, timeout)
        return result

    def set_prefetch(self, prefetch: int, *, timeout: float | None = None) -> None:
        """Change how many unacked deliveries the server may send (per queue consumer)."""
        def run(session: Session, _request: Request) -> None:
            if self._subscription is None or session.consume is None:
                raise BrokerError("set_prefetch before subscribe")
            session.consume.basic_qos(0, prefetch, False)
            self._subscription = (self._subscription[0], prefetch)

        self._submit(run, True, timeout)

    def take(self, limit: int, timeout: float = 0.0) -> list[Incoming]:
        """Up to ``limit`` deliveries received so far, oldest first; waits up to ``timeout`` for one."""
        self._ensure()
        self._start()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                count = 0 if self._lapsed() else min(limit, len(self._inbox))
                taken = [self._inbox.popleft() for _ in range(count)]
                left = deadline - time.monotonic()
                if taken or left <= 0 or limit <= 0:
                    return taken
                waiter = native_lock()
                waiter.acquire()
                self._takers.append(waiter)
            offload(waiter.acquire, True, left)

    def settle(self, generation: int, *, acks: Iterable[int] = (), requeue: Iterable[int] = (),
               reject: Iterable[int] = (), publish: Sequence[Outgoing] = (),
               timeout: float | None = None) -> bool:
        """Ack / requeue / reject (drop) deliveries and publish messages, in one ``tx.commit``.

        On the consume channel, so a republish and the ack of the original are
        applied together or not at all. False, with nothing sent, when ``generation``
        is not the live consume channel's (its deliveries were returned); also False
        when the connection dropped before the commit was confirmed.
        """
        acks, requeue, reject = list(acks), list(requeue), list(reject)

        def run(session: Session, _request: Request) -> bool:
            channel = session.consume
            if generation != self._generation or channel is None:
                return False
            for message in publish:
                channel.basic_publish(message.message(), exchange=message.exchange,
                                      routing_key=message.routing_key)
            for tag in acks:
                channel.basic_ack(tag)
            for tag in requeue:
                channel.basic_reject(tag, True)
            for tag in reject:
                channel.basic_reject(tag, False)
            channel.tx_commit()
            return True

        settled: bool = self._submit(run, True, timeout)
        return settled

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection and end the owner; pending calls fail. Reusable afterwards."""
        if self._pid != os.getpid():
            return
        with self._lock:
            running = self._closing = self._running
        if running:
            self._wake()
            self._stop_wait.release()
            offload(self._exited.acquire, True, timeout)
        self._close_pipe()
        self._pid = -1  # next use starts afresh

    # -- submitting -------------------------------------------------------------------

    def _submit(self, fn: Callable[[Session, Request], Any], retry: bool, timeout: float | None) -> Any:
        self._ensure()
        request = Request(fn, retry)
        with self._lock:
            if self._closing:
                raise BrokerError(f"{self.params.where}: the connection is closing")
            self._requests.append(request)
        self._start()
        self._wake()
        patience = self.patience if timeout is None else timeout
        if not offload(request.wait, patience) and request.cancel():
            if self._session is None:
                raise BrokerUnreachable(f"{self.params.where}: no connection for {patience:g}s "
                                        f"({self._last_error})")
            raise BrokerError(f"{self.params.where}: no answer within {patience:g}s")
        if request.error is not None:
            raise request.error
        return request.result

    def _start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
            self._exited.acquire()
        start_native_thread(self._run)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: the owner is awake already
            native_function("os", "write")(self._wake_w, b"x")

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd != -1:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def _pause(self, seconds: float) -> None:
        """The Reconnector's backoff: a wait that :meth:`close` cuts short."""
        if self._stop_wait.acquire(True, seconds):
            self._stop_wait.release()
            raise _Closing

    # -- the owner thread ---------------------------------------------------------------

    def _run(self) -> None:
        """The owner: connect, serve until the connection drops, reconnect; until closed."""
        fatal: BaseException | None = None
        try:
            while not self._closing:
                session = self._reconnector.call(self._open)
                self._session = session
                try:
                    self._serve(session)
                except _CONNECTION_LOST as exc:
                    self._last_error = describe(exc)
                    self._reconnector.lost(exc)
                finally:
                    self._session = None
                    self._drop(session)
        except _Closing:
            pass
        except Exception as exc:  # a wrong password or vhost: waiting will not fix it
            log.error("the connection to %s failed for good: %s", self.params.where, describe(exc),
                      exc_info=not isinstance(exc, amqp.exceptions.AMQPError))
            fatal = BrokerError(f"{self.params.where}: {describe(exc)}")
        finally:
            with self._lock:
                self._running = False
                requests, self._requests = list(self._requests), deque()
                self._closing = False
            for request in requests:
                request.finish(error=fatal or BrokerError(f"{self.params.where}: connection closed"))
            self._exited.release()

    def _open(self) -> Session:
        if self._closing:
            raise _Closing
        conn = amqp.Connection(
            f"{self.params.host}:{self.params.port}", userid=self.params.userid,
            password=self.params.password, virtual_host=self.params.virtual_host,
            ssl=dict(self.params.ssl) if isinstance(self.params.ssl, Mapping) else self.params.ssl,
            heartbeat=self.heartbeat, connect_timeout=self.connect_timeout,
            client_properties={"connection_name": self.name, "capabilities": CAPABILITIES})
        conn.Channel = TrackedChannel
        # Negotiation would add connection.blocked back (py-amqp's NEGOTIATE_CAPABILITIES),
        # and with it py-amqp reads the socket before every publish: confirms were then
        # read in the middle of a batch (a hang of a batch whose confirms all arrived
        # before it was registered, seen 1 in ~20 batches of 300 on a loaded machine).
        conn.negotiate_capabilities = {name: on for name, on in conn.negotiate_capabilities.items()
                                       if name != "connection.blocked"}
        try:
            conn.connect()
            session = Session(conn)
            if self._subscription is not None:
                self._resubscribe(session, self._subscription)
        except BaseException as exc:
            self._last_error = describe(exc)
            conn.collect()
            raise
        return session

    def _serve(self, session: Session) -> None:
        """Run requests, read frames, beat; until the connection drops or we are closing."""
        conn = session.conn
        poll = native_poll()
        sock_fd = conn.sock.fileno()
        poll.register(sock_fd, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        tick = min(MAX_TICK, conn.heartbeat / 4 if conn.heartbeat else MAX_TICK)
        tick_ms = int(1000 * tick)
        self._lapse = FROZEN_BEATS * conn.heartbeat + tick if conn.heartbeat else math.inf
        while not self._closing:
            self._run_requests(session)
            if conn.heartbeat:
                conn.heartbeat_tick(rate=2)  # a frame when nothing was sent for half the interval
            with self._lock:
                self._polling_since = time.monotonic()
            ready = dict(poll.poll(tick_ms))
            self._check_stopped()
            if self._wake_r in ready:
                _drain_pipe(self._wake_r)
            if sock_fd in ready or _tls_pending(conn):
                self._read(session, poll)
        with contextlib.suppress(*_CONNECTION_LOST):  # closing anyway
            conn.close()

    def _check_stopped(self) -> None:
        """After a poll: raise ConnectionResetError if this process was stopped past the heartbeat.

        Only the poll is timed (it returns within a tick unless the process was
        stopped): a long request before it (a publish to a server that blocks
        publishers) is not a sign of anything."""
        with self._lock:
            late, self._polling_since = time.monotonic() - self._polling_since, math.inf
        if late > self._lapse:
            raise ConnectionResetError(
                f"this process was stopped for {late:.1f}s, past the heartbeat: the server "
                "has closed the connection and requeued its deliveries")

    def _lapsed(self) -> bool:
        """Whether the owner's poll is past the heartbeat (a process just thawed, the owner
        not back yet): what the inbox holds is about to be dropped with the connection, so
        it is not handed out. Called under the lock."""
        return time.monotonic() - self._polling_since > self._lapse

    def _read(self, session: Session, poll: Any) -> None:
        """Read the frames that are there (a burst at most), dispatching deliveries and confirms."""
        arrived = False
        sock_fd = session.conn.sock.fileno()
        for _ in range(READ_BURST):
            before = self._received
            try:
                session.conn.blocking_read(READ_TIMEOUT)
            except TimeoutError:
                break
            except ChannelError as exc:
                self._channel_failed(session, exc)
            arrived = arrived or self._received != before
            if sock_fd not in dict(poll.poll(0)) and not _tls_pending(session.conn):
                break
        if arrived:
            self._wake_takers()

    def _run_requests(self, session: Session) -> None:
        while True:
            with self._lock:
                if not self._requests:
                    return
                request = self._requests.popleft()
            if request.cancelled:
                continue
            try:
                value = request.fn(session, request)
            except _CONNECTION_LOST:
                self._requeue_or_fail([request])
                raise
            except ChannelError as exc:
                request.finish(error=BrokerError(f"{self.params.where}: {describe(exc)}"))
                self._channel_failed(session, exc)
            except Exception as exc:
                request.finish(error=exc)
            else:
                if value is not LATER:
                    request.finish(value)

    def _channel_failed(self, session: Session, exc: BaseException) -> None:
        """The server closed a channel: replace whichever roles it ended."""
        log.warning("RabbitMQ closed a channel on %s: %s", self.params.where, describe(exc))
        if "confirm" in session.closed_roles():
            for request in session.confirms.abandon():
                request.finish(error=BrokerError(f"{self.params.where}: {describe(exc)}"))
        if session.consume is not None and session.consume.server_closed and self._subscription:
            self._resubscribe(session, self._subscription)

    def _resubscribe(self, session: Session, subscription: tuple[tuple[str, ...], int]) -> None:
        """Consume again after a reconnect or a consume channel the server closed."""
        try:
            self._open_consume(session, subscription)
        except ChannelError as exc:  # a queue deleted meanwhile, say: stop, do not loop
            log.error("cannot consume %s on %s any more: %s", ", ".join(subscription[0]),
                      self.params.where, describe(exc))
            self._subscription = None

    def _open_consume(self, session: Session, subscription: tuple[tuple[str, ...], int]) -> None:
        """A new consume channel (tx mode, qos, one consumer per queue), a new generation."""
        old, session.consume = session.consume, None
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._inbox.clear()  # the server returns what the old channel held
        if old is not None and not old.server_closed:
            old.close()
        queues, prefetch = subscription
        channel = session.channel()
        channel.tx_select()
        channel.basic_qos(0, prefetch, False)
        session.consumer_tags.clear()
        for queue in queues:
            self._add_consumer(session, channel, queue, generation)
        session.consume = channel

    def _add_consumer(self, session: Session, channel: Any, queue: str, generation: int) -> None:
        session.consumer_tags[queue] = channel.basic_consume(
            queue, no_ack=False, callback=lambda message: self._deliver(generation, queue, message))

    def _deliver(self, generation: int, queue: str, message: Any) -> None:
        incoming = incoming_of(generation, queue, message)
        with self._lock:
            if generation == self._generation:
                self._inbox.append(incoming)
                self._received += 1

    def _wake_takers(self) -> None:
        with self._lock:
            takers, self._takers = self._takers, []
        for waiter in takers:
            waiter.release()

    def _drop(self, session: Session) -> None:
        """After a connection ended: unblock what waited on it, retry what may be retried."""
        with self._lock:
            self._generation += 1  # every delivery of the dead channel is stale now
            self._inbox.clear()
        self._requeue_or_fail(session.confirms.abandon())
        self._wake_takers()
        try:
            session.conn.collect()
        except Exception:  # the socket is gone either way
            log.debug("closing a dead AMQP connection failed", exc_info=True)

    def _requeue_or_fail(self, requests: list[Request]) -> None:
        """Requests the lost connection interrupted: to the front of the queue, or failed."""
        retried = [request for request in requests if request.retry and not request.cancelled]
        for request in requests:
            if request not in retried:
                request.finish(error=BrokerError(f"{self.params.where}: connection lost"))
        with self._lock:
            self._requests.extendleft(reversed(retried))


def incoming_of(generation: int, queue: str, message: Any) -> Incoming:
    """A py-amqp message (consumed or got) as an :class:`Incoming`.

    py-amqp decodes the body of a message that has a ``content_encoding`` into a str
    (celeriac's own messages say utf-8), so it is encoded back: callers get bytes.
    """
    info = message.delivery_info
    properties = dict(message.properties)
    headers = dict(properties.pop("application_headers", None) or {})
    body = message.body if isinstance(message.body, bytes) else bytes(message.body, "utf-8")
    return Incoming(generation, info["delivery_tag"], queue, body, headers, properties,
                    bool(info.get("redelivered")), info.get("exchange", ""),
                    info.get("routing_key", ""))


def _tls_pending(conn: Any) -> bool:
    """True if TLS has decrypted bytes buffered that ``poll`` cannot see (plain TCP: never).

    py-amqp reads exactly one frame at a time, so whatever else the TLS layer
    already decrypted waits in its buffer while the socket shows nothing to read.
    Not exercised by the tests yet: the test node has no TLS listener.
    """
    pending = getattr(conn.sock, "pending", None)
    return bool(pending is not None and pending())


def _drain_pipe(fd: int) -> None:
    read = native_function("os", "read")  # eventlet's would wait on a hub when it is empty
    try:
        while read(fd, 4096):
            pass
    except BlockingIOError:
        pass
