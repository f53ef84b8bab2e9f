"""The Redis result backend (``redis://host:port/db``, ``rediss://`` for TLS, ``unix:///path``).

Key schema (``{prefix}`` is the URL's ``prefix=`` parameter, ``celeriac`` by default):

* ``{prefix}:result:{task_id}`` -- string: the record as JSON (:meth:`ResultRecord.to_json`)
  with a TTL of ``expires`` seconds (``result_expires``), set by the same ``SET``;
  no TTL when ``expires <= 0`` (kept forever, as the SQLite backend does).
* ``{prefix}:done:{task_id}`` -- pub/sub channel: each store publishes the record's
  status on it, in the same ``MULTI``/``EXEC`` as the ``SET``.
* ``{prefix}:listener:{random}`` -- pub/sub channel each process's listener holds so
  its connection always has a subscription; nothing is published on it.

**Storing** is one round trip for any number of records: one Lua script run
(``EVALSHA``; Redis runs a script alone, all of it) doing ``SET key json PX ms`` plus
``PUBLISH channel status`` per record, and the task index's entries (below). An unready
record (STARTED, RETRY, a custom state) over a ready one is left out, as
:meth:`ResultBackend.store` requires. It is retried through connection loss: ``SET``
and the index are idempotent, and a repeated notification only makes waiters look
once more.

**Waiting** blocks on pub/sub, never sleep-and-poll. A process has one listener per
server and prefix: one pub/sub connection read by one daemon thread (a greenlet
where gevent or eventlet patched ``threading``). A waiter registers an event for
its task's channel; the first waiter of a channel sends ``SUBSCRIBE`` from its own
thread while the reader reads (as redis-py's ``run_in_thread`` does), the last one
to leave sends ``UNSUBSCRIBE``. So a thousand waiting greenlets cost one pub/sub
connection plus the shared bounded pool for their reads. Notifications are not
trusted alone:

* The reader wakes a channel's waiters when the server *confirms* the
  subscription, and they look (``GET``) once: a result stored before the
  subscription took effect is found then, one stored after is published to us.
* Notifications carry the status; only ready ones wake waiters, so ``STARTED`` and
  ``RETRY`` cost no reads and never end a wait.
* On any error the reader starts over on a new connection (one log line when it
  goes, one when it is back) and subscribes every channel with waiters again,
  whose confirmations wake every waiter to look. A connection silent for long is
  PINGed, and lost if the silence goes on.
* Each waiter also looks every :attr:`RedisBackend.recheck_interval` seconds, in
  case a notification was lost in a way nobody noticed.

**Saved groups** (``GroupResult.save()``) are strings ``{prefix}:group:{group_id}`` with
the same TTL as records.

**Chords** keep two hashes per chord, with one TTL: ``{prefix}:chord:{group_id}``
(``size``, ``fired``: the index of the member that fired, ``done``: the body was sent,
``token``: the body message that claimed the body's run) and
``{prefix}:chord:{group_id}:members`` (header index -> result id). A join is one Lua
script (:data:`CHORD_JOIN_LUA`): Redis runs a script alone, so no other command lands
between its ``HSETNX`` of the member, its ``HLEN`` and its ``HSETNX`` of ``fired``.
Because a repeated join of the firing index answers True again until ``done``, a join
retried after a lost reply is as safe as a redelivered member.

**Expiry** is Redis's job: it deletes keys whose TTL has passed, so
:meth:`RedisBackend.cleanup` has nothing to delete.

**The task index** (``{prefix}:tasks:...``, for :meth:`RedisBackend.search`) is written by
the same script run as the records: see :mod:`celeriac.backends.redis_index`. With
``result_index`` off (``index=False``) the script is :data:`STORE_RECORDS_LUA`: the
records and their notifications only, as before the index.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import redis
from redis.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from celeriac.backends import redis_index
from celeriac.backends.base import ResultBackend, ResultRecord
from celeriac.backends.search import TaskSummary, check_page
from celeriac.exceptions import BackendError, TimeoutError
from celeriac.fastjson import dumps
from celeriac.redisconn import (
    DEFAULT_MAX_CONNECTIONS,
    TRANSIENT,
    Reconnector,
    client,
    connection_options,
    decode,
    log,
    safe_url,
    split_url,
)
from celeriac.states import READY_STATES

T = TypeVar("T")

#: The store with ``result_index`` off: the records alone, as before the task index.
#: ARGV: TTL in ms (0: none), prefix, and the records as one JSON array of
#: ``[id, state, payload]`` (as :func:`~celeriac.backends.redis_index.store_args`).
STORE_RECORDS_LUA = """
local px, p = tonumber(ARGV[1]), ARGV[2]
local ready = {SUCCESS = true, FAILURE = true, REVOKED = true}
for _, row in ipairs(cjson.decode(ARGV[3])) do
    local id, state, payload = row[1], row[2], row[3]
    local key = p .. ':result:' .. id
    local write = true
    if not ready[state] then
        local current = redis.call('GET', key)
        if current then
            local ok, record = pcall(cjson.decode, current)
            write = not (ok and type(record) == 'table' and ready[record.status] == true)
        end
    end
    if write then
        if px > 0 then
            redis.call('SET', key, payload, 'PX', px)
        else
            redis.call('SET', key, payload)
        end
        redis.call('PUBLISH', p .. ':done:' .. id, state)
    end
end
return 0
"""

#: KEYS: chord state hash, members hash. ARGV: index, result id, size, TTL in ms (0: none).
#: Returns ``{1|0, 0}`` (fire or not), or ``{-1, recorded size}`` on a size mismatch.
CHORD_JOIN_LUA = """
local state, members = KEYS[1], KEYS[2]
local index, size, px = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local recorded = redis.call('HGET', state, 'size')
if recorded and tonumber(recorded) ~= size then
    return {-1, tonumber(recorded)}
end
redis.call('HSET', state, 'size', size)
redis.call('HSETNX', members, index, ARGV[2])
if px > 0 then
    redis.call('PEXPIRE', state, px)
    redis.call('PEXPIRE', members, px)
else
    redis.call('PERSIST', state)
    redis.call('PERSIST', members)
end
local fired = redis.call('HGET', state, 'fired')
if not fired then
    if redis.call('HLEN', members) >= size then
        redis.call('HSET', state, 'fired', index)
        return {1, 0}
    end
    return {0, 0}
end
if fired == index and redis.call('HEXISTS', state, 'done') == 0 then
    return {1, 0}
end
return {0, 0}
"""

#: KEYS: chord state hash, members hash. ARGV: token, TTL in ms (0: none). Returns 1 if
#: the token owns the body's run.
CHORD_CLAIM_BODY_LUA = """
redis.call('HSETNX', KEYS[1], 'token', ARGV[1])
local px = tonumber(ARGV[2])
if px > 0 then
    redis.call('PEXPIRE', KEYS[1], px)
    if redis.call('EXISTS', KEYS[2]) == 1 then
        redis.call('PEXPIRE', KEYS[2], px)
    end
end
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
    return 1
end
return 0
"""

#: KEYS: chord state hash. Marks the body sent, on a live chord only (an HSET on a
#: missing key would create a state with no TTL).
CHORD_DONE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HSET', KEYS[1], 'done', 1)
end
"""

#: Longest the reader blocks in one read, so it notices close() and a silent connection.
LISTEN_TICK = 1.0
#: Seconds of silence after which the reader PINGs the server, and after which
#: (no PONG either) the connection counts as lost.
PING_AFTER = 10.0
DEAD_AFTER = 25.0


class _Event(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


#: Starts ``target`` on a daemon thread (or greenlet) named ``name``; returns something to join.
_Spawn = Callable[[Callable[[], None], str], Any]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)  # never keeps the process alive
    thread.start()
    return thread


def _primitives() -> tuple[Callable[[], _Event], Callable[[], AbstractContextManager[Any]], _Spawn]:
    """Event, lock and thread start that suit this process: ``threading``'s, green if patched.

    Under gevent with ``GEVENT_PATCHTHREAD=N`` sockets are green but ``threading``
    is not: a native event would block the hub and a native thread cannot use the
    hub's sockets, so the listener is a greenlet and waiters use gevent's event.
    """
    monkey = sys.modules.get("gevent.monkey")
    if (monkey is not None and monkey.is_module_patched("socket")
            and not monkey.is_module_patched("threading")):
        import gevent
        import gevent.event
        import gevent.lock

        return (gevent.event.Event, lambda: gevent.lock.Semaphore(1),
                lambda target, name: gevent.spawn(target))
    return threading.Event, threading.Lock, _start_thread


class _Listener:
    """One pub/sub connection of this process, read by one daemon thread, shared by all waiters."""

    def __init__(self, url: str, prefix: str) -> None:
        self.key = (url, prefix)
        self.pid = os.getpid()
        #: Backends using this listener (guarded by ``_registry_lock``); the last one stops it.
        self.users = 0
        self._url = url
        self._where = f"Redis result listener {safe_url(url)}"
        self._control = f"{prefix}:listener:{uuid.uuid4().hex}"
        self._new_event, new_lock, spawn = _primitives()
        #: Guards ``_waiters`` and ``_pubsub``, and orders (un)subscribes with changes to them.
        self._lock = new_lock()
        self._waiters: dict[str, set[_Event]] = {}
        self._pubsub: PubSub | None = None
        self._stopped = False
        self._stop_event = self._new_event()
        self._lost_since: float | None = None
        self._task = spawn(self._run, f"celeriac-results-{prefix}")

    # -- waiters (any thread) --------------------------------------------------------------
    def add(self, channel: str) -> _Event:
        """Register a waiter on ``channel``; its event is set whenever it should look."""
        event = self._new_event()
        with self._lock:
            waiters = self._waiters.get(channel)
            if waiters is None:
                self._waiters[channel] = {event}
                self._send(lambda pubsub: pubsub.subscribe(channel))
            else:  # subscribed, maybe long ago: look once, as the confirmation made the others
                waiters.add(event)
                event.set()
        return event

    def remove(self, channel: str, event: _Event) -> None:
        with self._lock:
            waiters = self._waiters.get(channel)
            if waiters is None:
                return
            waiters.discard(event)
            if not waiters:
                del self._waiters[channel]
                self._send(lambda pubsub: pubsub.unsubscribe(channel))  # type: ignore[no-untyped-call]

    def _send(self, command: Callable[[PubSub], object]) -> None:
        """Send a (un)subscribe if connected; the caller holds the lock.

        A failure is left to the reader: it finds the connection broken too, and
        subscribes a new one to every channel in ``_waiters`` (under this lock, so
        no channel falls between the two).
        """
        if self._pubsub is not None:
            try:
                command(self._pubsub)
            except (RedisError, OSError) as exc:
                log.debug("%s: (un)subscribe failed (%s); the reader reconnects", self._where, exc)

    def stop(self) -> None:
        """Stop the reader and close its connection (waiters left over fall back to re-reading)."""
        with self._lock:
            self._stopped = True
            pubsub, self._pubsub = self._pubsub, None
        self._stop_event.set()
        if pubsub is not None and pubsub.connection is not None:
            pubsub.connection.disconnect()  # ends the reader's read at once
        self._task.join(2.0)

    # -- the reader ------------------------------------------------------------------------
    def _run(self) -> None:
        pause = 0.05
        while not self._stopped:
            try:
                self._session()
            except Exception as exc:  # any failure: start over on a new connection
                if self._stopped:
                    break
                if self._lost_since is None:  # the first failure since a good connection
                    self._lost_since, pause = time.monotonic(), 0.05
                    log.warning("lost the connection to %s (%s); retrying with backoff",
                                self._where, _one_line(exc))
                self._stop_event.wait(pause)
                pause = min(pause * 2, 2.0)

    def _session(self) -> None:
        """Connect, subscribe every channel with waiters, and read until stopped or lost."""
        pubsub = self._connect()
        try:
            if self._lost_since is not None:
                log.warning("reconnected to %s after %.1fs", self._where,
                            time.monotonic() - self._lost_since)
                self._lost_since = None
            self._listen(pubsub)
        finally:
            with self._lock:
                if self._pubsub is pubsub:
                    self._pubsub = None
            self._discard(pubsub)

    def _connect(self) -> PubSub:
        # A one-connection pool of its own: the connection is held for good and must not
        # take a slot of the shared pool. No health-check PINGs: redis-py would send them
        # from the reading thread without our lock (we PING ourselves, under it).
        options = connection_options(self._url, health_check_interval=0)
        pubsub = PubSub(redis.ConnectionPool.from_url(self._url, max_connections=1, **options))
        try:
            pubsub.subscribe(self._control)
            connection = pubsub.connection
            assert connection is not None
            connection.deregister_connect_callback(pubsub.on_connect)
            connection.register_connect_callback(self._refuse_reconnect)
            with self._lock:
                if not self._stopped:
                    if self._waiters:
                        pubsub.subscribe(*self._waiters)
                    self._pubsub = pubsub
        except BaseException:
            self._discard(pubsub)
            raise
        return pubsub

    @staticmethod
    def _discard(pubsub: PubSub) -> None:
        pool = pubsub.connection_pool
        pubsub.reset()
        pool.disconnect()

    def _refuse_reconnect(self, connection: Any) -> None:
        """Connect callback: redis-py must not quietly reconnect our connection.

        It would resubscribe from its own bookkeeping, in whichever thread touched
        the socket next. Refusing makes that thread see a lost connection, and the
        reader starts over on a new one: one way back, which wakes every waiter.
        """
        connection.disconnect()
        raise RedisConnectionError("the pub/sub connection was lost")

    def _listen(self, pubsub: PubSub) -> None:
        heard = pinged = time.monotonic()
        while not self._stopped:
            message = pubsub.get_message(timeout=LISTEN_TICK)
            now = time.monotonic()
            if message is not None:
                heard = now
                self._dispatch(message)
            elif now - heard > DEAD_AFTER:
                raise RedisConnectionError(f"no reply from the server for {DEAD_AFTER:.0f}s")
            elif now - heard > PING_AFTER and now - pinged > PING_AFTER:
                pinged = now
                with self._lock:
                    pubsub.ping()

    def _dispatch(self, message: dict[str, Any]) -> None:
        """Wake a channel's waiters on its subscription's confirmation and on ready states."""
        kind = message.get("type")
        if kind == "message":
            if decode(message["data"]) not in READY_STATES:
                return
        elif kind != "subscribe":
            return
        with self._lock:
            events = list(self._waiters.get(decode(message["channel"]), ()))
        for event in events:
            event.set()


#: This process's listeners by (server URL, prefix), and the lock for them and their users.
_listeners: dict[tuple[str, str], _Listener] = {}
_registry_lock = threading.Lock()


class RedisBackend(ResultBackend):
    """Results as expiring Redis strings; waiting on pub/sub (see the module docstring)."""

    expires_itself = True
    schemes = ("redis", "rediss", "unix")

    #: Seconds between a waiter's safety looks at its key (notifications do the real work).
    recheck_interval = 2.0

    def __init__(self, url: str, *, expires: float = 86400.0, index: bool = True,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        super().__init__(url, expires=expires, index=index)
        self._url, self.prefix = split_url(url)
        self._redis = client(self._url, max_connections=max_connections)  # shared with a broker
        self._where = f"Redis result backend {safe_url(self._url)}"
        self._retry = Reconnector(self._where, BackendError)
        #: Taken by the first wait(): processes that only store results never subscribe.
        self._listener: _Listener | None = None
        # EVALSHA, loading the script on NOSCRIPT (after a server restart, too).
        self._join_script = self._redis.register_script(CHORD_JOIN_LUA)
        self._claim_script = self._redis.register_script(CHORD_CLAIM_BODY_LUA)
        self._done_script = self._redis.register_script(CHORD_DONE_LUA)
        self._store_script = self._redis.register_script(
            redis_index.STORE_LUA if index else STORE_RECORDS_LUA)
        self._forget_script = self._redis.register_script(redis_index.FORGET_LUA)

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}:result:{task_id}"

    def _channel(self, task_id: str) -> str:
        return f"{self.prefix}:done:{task_id}"

    def _chord_keys(self, group_id: str) -> list[str]:
        state = f"{self.prefix}:chord:{group_id}"
        return [state, f"{state}:members"]

    def _px(self, expires: float | None = None) -> int | None:
        """A TTL in milliseconds for ``SET ... PX``, None for "keep forever" (``expires <= 0``)."""
        seconds = self._ttl(expires)
        return max(math.ceil(seconds * 1000), 1) if seconds > 0 else None

    def _call(self, fn: Callable[[], T], *, retry: bool = True) -> T:
        """``fn()`` through the reconnector; a refusal by the server becomes one-line BackendError."""
        try:
            return self._retry.call(fn, retry=retry)
        except RedisError as exc:  # not a lost connection: OOM, READONLY, WRONGTYPE...
            raise BackendError(f"{self._where}: {_one_line(exc)}") from exc

    def _at_once(self, fn: Callable[[], T]) -> T:
        """``fn()`` without backoff, tried twice: the first try may take a pooled connection
        the server has closed since (a restart, ``CLIENT KILL``); the pool is LIFO, so
        the second try gets that connection back, reconnected."""
        try:
            return fn()
        except TRANSIENT:
            return self._call(fn, retry=False)
        except RedisError as exc:
            raise BackendError(f"{self._where}: {_one_line(exc)}") from exc

    def _parse(self, payload: str | bytes | None) -> ResultRecord | None:
        return None if payload is None else ResultRecord.from_json(payload, self._where)

    def ping(self) -> None:
        """PING without backoff: tells at once whether the server can be reached."""
        self._at_once(self._redis.ping)

    def store(self, record: ResultRecord) -> None:
        self.store_many([record])

    def store_many(self, records: Sequence[ResultRecord]) -> None:
        """One script run (:data:`~celeriac.backends.redis_index.STORE_LUA`), one round
        trip and atomic for any number of records: per record a ``SET`` with TTL, a
        ``PUBLISH`` and its index entries (none with ``index`` off:
        :data:`STORE_RECORDS_LUA`); an unready record over a ready one is left out."""
        if not records:
            return
        args: list[str | int | bytes]
        if self.index:
            args = redis_index.store_args(self.prefix, records, time.time(), self._px())
        else:
            args = [self._px() or 0, self.prefix,
                    dumps([(r.task_id, r.status, r.to_json()) for r in records])]
        self._call(lambda: self._store_script(keys=[], args=args))

    def get(self, task_id: str) -> ResultRecord | None:
        return self._parse(self._call(lambda: self._redis.get(self._key(task_id))))

    def get_many(self, task_ids: Sequence[str]) -> list[ResultRecord | None]:
        """One ``MGET``."""
        if not task_ids:
            return []
        keys = [self._key(task_id) for task_id in task_ids]
        return [self._parse(payload) for payload in self._call(lambda: self._redis.mget(keys))]

    def wait(self, task_id: str, timeout: float | None = None,
             interval: float = 0.005) -> ResultRecord:
        """Block on the listener until the record is ready (``interval`` is unused).

        Look; if not ready, register with the listener and sleep on the event for
        at most :attr:`recheck_interval`; look after every wake-up (confirmation,
        ready notification, reconnect, safety timer). The event is cleared *before*
        the look, so a notification arriving during it is not lost: the next sleep
        returns at once. While Redis is unreachable the wait goes on (the reconnect
        wakes it); if it times out meanwhile, that error is raised, not TimeoutError.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = self._channel(task_id)
        listener: _Listener | None = None
        event: _Event | None = None
        try:
            while True:
                record, lost = self._look(task_id)
                if record is not None and record.ready:
                    return record
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    if lost is not None:
                        raise lost
                    raise TimeoutError(f"result of {task_id} not ready after {timeout}s")
                if listener is None or event is None:
                    listener = self._use_listener()
                    event = listener.add(channel)
                event.wait(self.recheck_interval if deadline is None
                           else min(self.recheck_interval, deadline - now))
                event.clear()
        finally:
            if listener is not None and event is not None:
                listener.remove(channel, event)

    def _look(self, task_id: str) -> tuple[ResultRecord | None, BackendError | None]:
        """A waiter's GET: ``(record, None)``, or ``(None, error)`` if Redis is unreachable.

        Without backoff, which could outlast the wait's timeout: the listener's
        reconnect wakes the waiter when Redis is back.
        """
        try:
            return self._parse(self._at_once(lambda: self._redis.get(self._key(task_id)))), None
        except BackendError as exc:
            if not isinstance(exc.__cause__, TRANSIENT):
                raise
            return None, exc

    def _use_listener(self) -> _Listener:
        """The process's listener for this server and prefix, started if there is none."""
        with _registry_lock:
            listener = self._listener
            if listener is None or listener.pid != os.getpid():  # a forked child starts its own
                key = (self._url, self.prefix)
                listener = _listeners.get(key)
                if listener is None or listener.pid != os.getpid():
                    listener = _listeners[key] = _Listener(*key)
                listener.users += 1
                self._listener = listener
            return listener

    def forget(self, task_id: str) -> None:
        def delete() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._key(task_id))
            self._forget_script(keys=[], args=[self.prefix, task_id], client=pipe)
            pipe.execute()

        self._call(delete)

    def search(self, *, task_id_prefix: str | None = None, name: str | None = None,
               state: str | None = None, offset: int = 0,
               limit: int = 50) -> tuple[list[TaskSummary], int]:
        """Two round trips: ``ZCOUNT`` and ``ZREVRANGEBYSCORE`` of the filter's sorted
        set, then one ``MGET`` of the page's summaries (:mod:`celeriac.backends.redis_index`)."""
        self._check_index()
        check_page(offset, limit)
        return self._call(lambda: redis_index.search(
            self._redis, self.prefix, self.expires, task_id_prefix=task_id_prefix, name=name,
            state=state, offset=offset, limit=limit))

    # -- saved groups ----------------------------------------------------------------------
    def _group_key(self, group_id: str) -> str:
        return f"{self.prefix}:group:{group_id}"

    def save_group(self, group_id: str, members: Any) -> None:
        payload, px = json.dumps(members), self._px()
        self._call(lambda: self._redis.set(self._group_key(group_id), payload, px=px))

    def restore_group(self, group_id: str) -> Any:
        payload = self._call(lambda: self._redis.get(self._group_key(group_id)))
        return None if payload is None else json.loads(payload)

    def delete_group(self, group_id: str) -> None:
        self._call(lambda: self._redis.delete(self._group_key(group_id)))

    # -- chords ----------------------------------------------------------------------------
    def chord_join(self, group_id: str, index: int, result_id: str, size: int, *,
                   expires: float | None = None) -> bool:
        """One script run (:data:`CHORD_JOIN_LUA`); retried through connection loss, which
        is safe because a repeated join of the same index gives the same answer."""
        self._check_member(group_id, index, size)
        args: list[str | int] = [index, result_id, size, self._px(expires) or 0]
        keys = self._chord_keys(group_id)
        verdict, recorded = self._call(lambda: self._join_script(keys=keys, args=args))
        if verdict == -1:
            raise self._size_mismatch(group_id, size, int(recorded))
        return bool(verdict == 1)

    def chord_members(self, group_id: str) -> list[str] | None:
        state, members = self._chord_keys(group_id)

        def read() -> tuple[Any, dict[Any, Any]]:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hget(state, "size")
            pipe.hgetall(members)
            size, joined = pipe.execute()
            return size, joined

        size, joined = self._call(read)
        if size is None:
            return None
        return [decode(joined[k]) for k in sorted(joined, key=lambda k: int(decode(k)))]

    def chord_done(self, group_id: str) -> None:
        keys = self._chord_keys(group_id)[:1]
        self._call(lambda: self._done_script(keys=keys))

    def chord_forget(self, group_id: str) -> None:
        keys = self._chord_keys(group_id)
        self._call(lambda: self._redis.delete(*keys))

    def celery_chord_size(self, group_id: str) -> int | None:
        value = self._call(lambda: self._redis.get(f"celery-taskset-meta-{group_id}.s"))
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def chord_claim_body(self, group_id: str, token: str, *,
                         expires: float | None = None) -> bool:
        keys = self._chord_keys(group_id)
        args: list[str | int] = [token, self._px(expires) or 0]
        return bool(self._call(lambda: self._claim_script(keys=keys, args=args)) == 1)

    def cleanup(self) -> int:
        """Nothing to do: Redis deletes each key itself once its TTL has passed (on access
        and in its active expiry cycle), so no expired record is ever left to count."""
        return 0

    def close(self) -> None:
        """Let go of the listener; the last user stops it and closes its connection.

        The command connections stay: that pool is per process and shared with a
        broker on the same URL (see :mod:`celeriac.redisconn`).
        """
        with _registry_lock:
            listener, self._listener = self._listener, None
            if listener is None or listener.pid != os.getpid():
                return
            listener.users -= 1
            if listener.users > 0:
                return
            if _listeners.get(listener.key) is listener:
                del _listeners[listener.key]
        listener.stop()
