"""The Redis broker (``redis://host:port/db``, ``rediss://`` for TLS, ``unix:///path``).

Redis is the distributed engine: many worker machines, one server. Every state
change of a message happens in one Lua script on the server (``brokers/lua/``;
the key schema is at the top of ``prelude.lua`` and each script lists what it
touches), so there is no window in which a message has been popped and not yet
recorded as claimed: a claim, its lease, its fencing token and its delivery
count are one atomic step.

* **Ordering.** Each queue's ready messages sit in a sorted set scored
  ``(9 - priority) * 1e13 + publish sequence``, so a fetch over several queues
  takes the lowest scores of all of them: highest priority first, then oldest,
  and no listed queue is starved.
* **Leases** are deadlines on the server's clock (``TIME``) in a per-queue
  sorted set; running tasks renew them. A fetch first moves due ``countdown``/
  ``eta`` messages and expired leases back to ready, so a machine that vanished
  loses nothing, it only delays its messages by one lease.
* **Release at death.** Each worker process's claims are also in a set under
  its consumer id, so the supervisor releases them all with one call. A message
  released as a *suspect* (its process died running it beside other tasks) keeps
  its group size in a field ``x`` of its hash until it is acked or dead-lettered;
  the claim reads it with the fields it reads anyway.
* **Waiting.** A fetch that finds nothing blocks in ``BLPOP`` on per-queue wake
  lists that publish and requeue push to, until something arrives or the next
  scheduled message comes due: an idle worker starts a task within a round trip
  of its publication, and costs nothing while idle. A scheduled message due within
  :data:`BLOCK_RESOLUTION` is waited for with a local sleep, since the server fires
  BLPOP timeouts only on its cron tick (up to 100 ms late).
* **Connection loss.** Calls retry with backoff through :class:`Reconnector`
  (workers forever, producers for ``broker_reconnect_timeout`` seconds), logging
  one line when the connection goes and one when it is back. Publishing is safe
  to retry because ids are chosen by the client and the script skips an id it
  already has; settle calls are safe because they are fenced by token. A claim
  whose reply is lost is not retried blind: those messages come back when their
  lease runs out.

* **Revoke and remote control** (``lua/control.lua``): revocations in a sorted
  set by seq with a second one by expiry (a worker's poll is one script call
  that drops the expired ones, then reads past its cursor), commands in a capped
  sorted set of one command per member, and replies in a list per reply box that
  expires.
  ``replies()`` waits in ``BLPOP``, at most :data:`MAX_BLOCK` at a time, so a
  pooled connection is never held long and a lost one goes through the
  reconnector on the next round.

Metric rollups are a mixin of their own (:mod:`celeriac.brokers.metrics_redis`).

Connections come from a shared, bounded pool per process
(:mod:`celeriac.redisconn`): a thousand greenlets share a few sockets.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from celeriac.brokers import limits
from celeriac.brokers.base import (
    Broker,
    ControlCommand,
    DeadLetter,
    Delivery,
    OutgoingMessage,
    QueueStats,
    Revocation,
    WorkerInfo,
    check_priority,
    note_stored,
)
from celeriac.brokers.browse import is_retry
from celeriac.brokers.ids import MessageIds
from celeriac.brokers.metrics_redis import RedisMetrics
from celeriac.brokers.redis_admin import RedisAdmin
from celeriac.brokers.redis_events import RedisEvents
from celeriac.exceptions import BrokerError, BrokerUnreachable
from celeriac.redisconn import TRANSIENT, Reconnector, client, decode, safe_url, split_url

#: Seconds a call waits out a lost connection until ``retry_for`` says otherwise.
DEFAULT_PATIENCE = 20.0
#: Messages per publish script call: bounds the script's run time on the server.
PUBLISH_CHUNK = 1000
#: How long the receipt of a publish call is kept: a retry within it stores nothing twice.
RECEIPT_TTL_MS = 120_000
#: Messages purged per script call.
PURGE_CHUNK = 5000
#: Longest single BLPOP of a waiting fetch (it re-checks schedules and leases after)
#: or of a waiting ``replies()``.
MAX_BLOCK = 1.0
#: How late a BLPOP timeout may fire: the server checks blocked clients' timeouts on
#: its cron tick (``hz``, 10 per second by default), so a 10 ms timeout returns after
#: about 100 ms (measured on redis-server 8 here: 91 ms late for 10 ms, 51 ms for 50 ms).
#: A scheduled message due sooner than this is waited for with a local sleep instead.
BLOCK_RESOLUTION = 0.1
#: A settled message's flag in the settle script's reply (``b"1"``; ``b"0"``: its token was stale).
ONE = ord("1")
#: Replies taken from a box per LPOP when no count bounds them.
REPLIES_BATCH = 1000


_ids = MessageIds()


@cache
def _script_source(name: str) -> str:
    lua = resources.files("celeriac.brokers") / "lua"
    return (lua / "prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _ms(seconds: float) -> int:
    return max(math.ceil(seconds * 1000), 0)


def _timing(message: OutgoingMessage) -> tuple[int | str, str]:
    """The eta (unix ms, "" for none) and retry flag ("1": a task's retry) of publish.lua.

    Only a message with an eta is looked into: a retry waiting for its countdown is
    listed apart from other scheduled messages (:mod:`celeriac.brokers.redis_admin`).
    """
    if message.eta is None:
        return "", ""
    return _ms(message.eta), "1" if is_retry(message.body) else ""


def _publish_args(ids: Sequence[str], messages: Sequence[OutgoingMessage]) -> list[Any]:
    """The arguments of one publish.lua call: the receipt, named after the first id
    (unique, and known to a retry), its ttl, the retry flag, then six per message."""
    args: list[Any] = [ids[0], RECEIPT_TTL_MS, "0"]
    for message_id, message in zip(ids, messages, strict=True):
        args += (message_id, message.queue, message.priority, *_timing(message), message.body)
    return args


def _delivery(item: bytes) -> Delivery:
    """A claimed message from its item in the claim's reply (``fetch.lua``):
    ``"deliveries token priority len(id) len(queue) id+queue+body"``."""
    count, token, priority, size, qsize, rest = item.split(b" ", 5)
    cut = int(size)  # bytes: a queue's name may be any text, a body any bytes
    end = cut + int(qsize)
    return Delivery(id=rest[:cut].decode(), queue=rest[cut:end].decode(), body=rest[end:],
                    delivery_count=int(count), token=int(token), priority=int(priority))


class RedisBroker(RedisAdmin, RedisMetrics, RedisEvents, Broker):
    """Messages in Redis, claimed, settled and recovered by server-side scripts."""

    schemes = ("redis", "rediss", "unix")

    def __init__(self, url: str, *, max_deliveries: int = 5, poll_interval: float = 0.05,
                 pool_limit: int = 32) -> None:
        super().__init__(url, max_deliveries=max_deliveries, poll_interval=poll_interval,
                         pool_limit=pool_limit)
        self._url, self.prefix = split_url(url)
        self._redis = client(self._url, max_connections=pool_limit)
        self._where = f"Redis broker {safe_url(self._url)}"
        self._retry = Reconnector(self._where, BrokerUnreachable, DEFAULT_PATIENCE)
        self._scripts: dict[str, Script] = {}

    def retry_for(self, seconds: float | None) -> None:
        self._retry.give_up_after = seconds

    # -- plumbing --------------------------------------------------------------------
    def _script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._redis.register_script(_script_source(name))
        return script

    def _run(self, name: str, args: Sequence[Any], *, retry: bool = True,
             again: int | None = None) -> Any:
        """Run script ``name`` with ``ARGV = [prefix, *args]`` (reloaded if the server lost it).

        ``again``: index in ``args`` of a flag set to ``"1"`` when the call is retried,
        so the script can tell a retry whose first try was applied from a first try.
        """
        script = self._script(name)
        argv = [self.prefix, *args]
        tries = 0

        def call() -> Any:
            nonlocal tries
            tries += 1
            if again is not None and tries > 1:
                argv[again + 1] = "1"
            try:
                return script(args=argv)
            except redis.ResponseError as exc:
                raise self._script_error(name, exc) from exc

        return self._retry.call(call, retry=retry)

    def _transaction(self, name: str, queue: Callable[[Any], None]) -> list[Any]:
        """The commands ``queue`` adds to a pipeline, in one MULTI: script ``name`` called
        by its sha, sent again once loaded if the server had forgotten it. Errors as
        :meth:`_run`'s (a busy or loading server is retried as a lost connection)."""
        pipe = self._redis.pipeline(transaction=True)
        queue(pipe)
        try:
            replies: list[Any] = pipe.execute()
        except redis.exceptions.NoScriptError:
            script = self._script(name)
            self._redis.script_load(script.script)
            return self._transaction(name, queue)
        except redis.ResponseError as exc:
            raise self._script_error(name, exc) from exc
        return replies

    def _script_error(self, name: str, exc: redis.ResponseError) -> Exception:
        """What a script's error is here: a busy or loading server a lost connection (the
        call is retried), anything else a :class:`BrokerError` naming the script."""
        if "BUSY" in str(exc) or "LOADING" in str(exc):
            return redis.ConnectionError(str(exc))
        return BrokerError(f"{self._where}: script {name} failed: {exc}")

    def _settle(self, action: str, deliveries: Sequence[Delivery], a: Any = "",
                b: Any = "") -> list[bool]:
        if not deliveries:
            return []
        # One argument for all the pairs (settle.lua): two a message cost redis-py about
        # 1.5 us a message to pack, and a list of flags as much again to parse.
        pairs = " ".join([f"{d.id} {d.token}" for d in deliveries])
        reply = self._run("settle", [action, a, b, len(deliveries), pairs],
                          again=2 if action == "ack" else None)
        return [flag == ONE for flag in reply]

    # -- producing -------------------------------------------------------------------
    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Store ``messages``; more than :data:`PUBLISH_CHUNK` go in one MULTI of several scripts."""
        for message in messages:
            check_priority(message)
        ids = _ids.take(len(messages))
        if not messages:
            return ids
        chunks = [_publish_args(ids[start:start + PUBLISH_CHUNK],
                                messages[start:start + PUBLISH_CHUNK])
                  for start in range(0, len(messages), PUBLISH_CHUNK)]
        if len(chunks) == 1:
            self._run("publish", chunks[0], again=2)
            return ids
        script = self._script("publish")

        def send_all() -> None:
            # One transaction: all or none, like every broker's publish.
            def queue(pipe: Any) -> None:
                for args in chunks:
                    pipe.evalsha(script.sha, 0, self.prefix, *args)

            self._transaction("publish", queue)

        tries = 0

        def attempt() -> None:
            # A retry marks every chunk as one: chunks applied before the reply was
            # lost find their receipts and are skipped.
            nonlocal tries
            if tries:
                for args in chunks:
                    args[2] = "1"
            tries += 1
            send_all()

        self._retry.call(attempt)
        return ids

    def publish_chunks(self, chunks: Sequence[Sequence[OutgoingMessage]]) -> None:
        """Each chunk in one script call, the calls pipelined: the server stores one
        chunk while this process writes the next, so a bulk send costs the larger of
        the two, not their sum. A call is atomic; after a lost connection every call not
        yet answered is sent again as a retry, which its receipt makes a no-op if the
        first try was applied. A chunk too big for one script call (a group of more than
        :data:`PUBLISH_CHUNK`) goes through :meth:`publish`, one transaction, so it
        stays all or none."""
        chunks = [chunk for chunk in chunks if chunk]
        if len(chunks) < 2 or any(len(chunk) > PUBLISH_CHUNK for chunk in chunks):
            super().publish_chunks(chunks)
            return
        for chunk in chunks:
            for message in chunk:
                check_priority(message)
        calls = [_publish_args(_ids.take(len(chunk)), chunk) for chunk in chunks]
        sizes = [(len(args) - 3) // 6 for args in calls]
        script = self._script("publish")
        answered = 0  # calls whose reply was read: stored
        tries = 0

        def attempt() -> None:
            nonlocal answered, tries
            while answered < len(calls):
                if tries:  # a retry: a call applied before its reply was lost is skipped
                    for args in calls[answered:]:
                        args[2] = "1"
                tries += 1
                stored, missing = self._pipeline_scripts(script, calls[answered:])
                answered += stored
                if missing:  # the server lost the script (a restart, SCRIPT FLUSH)
                    self._redis.script_load(script.script)

        try:
            self._retry.call(attempt)
        except Exception as exc:
            note_stored(exc, sum(sizes[:answered]), sum(sizes), unsure=sum(sizes[answered:]))
            raise

    def _pipeline_scripts(self, script: Script, calls: Sequence[Sequence[Any]]) -> tuple[int, bool]:
        """Send every call of ``script`` on one connection, then read the replies: how
        many calls in a row from the first were applied, and whether one was refused
        because the server lacks the script (it and those after are then not counted)."""
        pool = self._redis.connection_pool
        connection = pool.get_connection()
        applied, missing = 0, False
        try:
            for args in calls:
                connection.send_command("EVALSHA", script.sha, 0, self.prefix, *args)
            for _ in calls:
                try:
                    connection.read_response()
                except redis.exceptions.NoScriptError:
                    missing = True
                    continue
                except redis.ResponseError as exc:
                    if "BUSY" in str(exc) or "LOADING" in str(exc):
                        raise redis.ConnectionError(str(exc)) from exc
                    raise BrokerError(f"{self._where}: script publish failed: {exc}") from exc
                applied += not missing
        except BaseException:
            connection.disconnect()  # replies may be left unread on it
            raise
        finally:
            pool.release(connection)
        return applied, missing

    # -- consuming -------------------------------------------------------------------
    def fetch(self, queues: Sequence[str], count: int, *, consumer: str, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        queues = list(dict.fromkeys(queues))
        if count <= 0 or not queues:
            return []
        deadline = time.monotonic() + timeout
        wake_keys = [f"{self.prefix}:wake:{q}" for q in queues]
        reply = self._claim(count, consumer, lease, queues)
        while True:
            deliveries = [_delivery(item) for item in reply[2:]]
            if reply[1]:  # id, group of suspect messages: rare, so not a field of every one
                marks = reply[1]
                suspects = {decode(marks[i]): int(marks[i + 1]) for i in range(0, len(marks), 2)}
                deliveries = [replace(d, suspect=suspects[d.id]) if d.id in suspects else d
                              for d in deliveries]
            remaining = deadline - time.monotonic()
            if deliveries or remaining <= 0:
                return deliveries
            wait = min(remaining, MAX_BLOCK)
            if int(reply[0]) >= 0:
                wait = min(wait, int(reply[0]) / 1000)
                if wait < BLOCK_RESOLUTION:
                    # BLPOP would wake up to a tick late; a publish in the meantime waits
                    # at most this long (< BLOCK_RESOLUTION) instead.
                    time.sleep(wait)
                    reply = self._claim(count, consumer, lease, queues)
                    continue
            if wait >= 0.001:  # BLPOP 0 would block forever
                reply = self._block_then_claim(wake_keys, wait, count, consumer, lease, queues)
            else:
                reply = self._claim(count, consumer, lease, queues)

    def _block_then_claim(self, wake_keys: list[str], wait: float, count: int, consumer: str,
                          lease: float, queues: list[str]) -> Any:
        """BLPOP on the wake-up keys and the claim after it, sent together: the server
        runs the claim as soon as the BLPOP returns, woken or timed out, so a message
        published to an idle worker is claimed without a second round trip (a quarter
        of the enqueue-to-start latency on loopback). On any error, the claim is made
        alone, as :meth:`_claim` makes it: after a lost connection, only once the
        server answers again."""
        script = self._script("fetch")
        pipe = self._redis.pipeline(transaction=False)
        pipe.blpop(wake_keys, timeout=wait)
        pipe.evalsha(script.sha, 0, self.prefix, count, consumer, _ms(lease), self.max_deliveries,
                     *queues)
        try:
            return pipe.execute()[1]
        except redis.exceptions.NoScriptError:
            self._redis.script_load(script.script)  # the server lost it: nothing was claimed
        except (redis.ResponseError, *TRANSIENT):
            pass
        return self._claim(count, consumer, lease, queues)

    def _claim(self, count: int, consumer: str, lease: float, queues: list[str]) -> Any:
        """Run the claim script; through connection loss, but never resend a claim blindly.

        If the connection drops after the server ran the claim, resending it at once
        would claim a second batch while the first sits unseen until its lease runs
        out. So a failed claim is followed by PINGs (with the reconnector's backoff and
        patience) until the server answers, and only then by a new claim.
        """
        while True:
            try:
                return self._run("fetch", [count, consumer, _ms(lease), self.max_deliveries,
                                           *queues], retry=False)
            except BrokerUnreachable:
                # Wait for the server with a harmless command, then claim again.
                self._retry.call(self._redis.ping)

    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        return self._settle("ack", deliveries, "", "0")

    def renew(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        return self._settle("renew", deliveries, _ms(lease))

    def requeue(self, deliveries: Sequence[Delivery], *, delay: float = 0.0,
                uncharge: bool = False) -> list[bool]:
        return self._settle("requeue", deliveries, _ms(delay), "1" if uncharge else "0")

    def dead_letter(self, deliveries: Sequence[Delivery], reason: str) -> list[bool]:
        return self._settle("dead", deliveries, reason)

    def release_consumer(self, consumer: str, *, started: Collection[str] = (),
                         suspects: Collection[str] = (), group: int = 1) -> int:
        # The script tells the two lists apart by the count of started ids before them.
        return int(self._run("release", [consumer, max(group, 1), len(started), *started,
                                         *suspects]))

    # -- inspection and maintenance --------------------------------------------------
    def _queues(self) -> list[str]:
        """Every queue that has had a message (dead letters included: they were messages)."""
        names = self._retry.call(lambda: self._redis.smembers(f"{self.prefix}:queues"))
        return sorted(decode(n) for n in names)

    def stats(self) -> dict[str, QueueStats]:
        queues = self._queues()
        if not queues:
            return {}
        counts = [int(n) for n in self._run("stats", queues)]
        now = counts[-1]
        found = {}
        for i, q in enumerate(queues):
            ready, scheduled, in_flight, dead, oldest, paused = counts[i * 6:i * 6 + 6]
            found[q] = QueueStats(ready, scheduled, in_flight, dead,
                                  oldest_age=None if oldest < 0 else max(now - oldest, 0) / 1000,
                                  paused=bool(paused))
        return found

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        index = f"{self.prefix}:dead" + ("" if queue is None else f":{queue}")

        def read() -> list[DeadLetter]:
            ids = [decode(i) for i in self._redis.zrevrange(index, 0, limit - 1)]
            pipe = self._redis.pipeline(transaction=False)
            for message_id in ids:
                pipe.hmget(f"{self.prefix}:dl:{message_id}", "q", "b", "reason", "d", "at")
            letters = []
            for message_id, (q, body, reason, count, at) in zip(ids, pipe.execute(), strict=True):
                if body is not None:
                    letters.append(DeadLetter(id=message_id, queue=decode(q), body=bytes(body),
                                              reason=decode(reason), delivery_count=int(count),
                                              failed_at=int(at) / 1000))
            return letters

        return self._retry.call(read)

    def purge(self, queue: str | None = None) -> int:
        total = 0
        for name in [queue] if queue is not None else self._queues():
            while True:
                deleted = int(self._run("purge", [name, PURGE_CHUNK]))
                total += deleted
                if deleted < PURGE_CHUNK:
                    break
        return total

    def heartbeat(self, worker: str, info: dict[str, Any], ttl: float) -> None:
        self._run("workers", ["beat", worker, _ms(ttl), json.dumps(info, default=str)])

    def forget_worker(self, worker: str) -> None:
        self._run("workers", ["forget", worker])

    def workers(self) -> list[WorkerInfo]:
        return self._worker_records("live")

    def reap_workers(self) -> list[WorkerInfo]:
        return self._worker_records("reap")

    def _worker_records(self, action: str) -> list[WorkerInfo]:
        reply = self._run("workers", [action])
        found = []
        for i in range(0, len(reply), 2):
            seen, _, info = decode(reply[i + 1]).partition("|")
            found.append(WorkerInfo(name=decode(reply[i]), info=json.loads(info),
                                    last_seen=int(seen) / 1000))
        return sorted(found, key=lambda w: w.name)

    # -- revoke ----------------------------------------------------------------------
    def revoke(self, revocations: Sequence[Revocation]) -> None:
        if not revocations:
            return
        args: list[Any] = ["revoke", _ids.take(1)[0], RECEIPT_TTL_MS, "0"]
        for r in revocations:
            args += (repr(float(r.expires)),
                     json.dumps({"task_id": r.task_id, "expires": r.expires,
                                 "terminate": r.terminate, "signal": r.signal}))
        self._run("control", args, again=3)

    def revocations(self, after: int = 0, limit: int = 1000) -> list[Revocation]:
        if limit <= 0:
            return []
        found = []
        for entry in self._run("control", ["revocations", after, limit]):
            seq, _, payload = decode(entry).partition("|")
            data = json.loads(payload)
            found.append(Revocation(task_id=data["task_id"], expires=float(data["expires"]),
                                    terminate=bool(data["terminate"]), signal=data["signal"],
                                    seq=int(seq)))
        return found

    # -- remote control ----------------------------------------------------------------
    def broadcast(self, body: dict[str, Any]) -> int:
        payload = json.dumps({"time": time.time(), "body": body}, default=str)
        return int(self._run("control", ["broadcast", _ids.take(1)[0], RECEIPT_TTL_MS, "0",
                                         self.commands_kept, payload], again=3))

    def commands(self, after: int, limit: int = 100) -> list[ControlCommand]:
        if limit <= 0:
            return []
        # P:control: a sorted set of "seq|json", scored by seq.
        raw = self._retry.call(lambda: self._redis.zrangebyscore(
            f"{self.prefix}:control", f"({after}", "+inf", start=0, num=limit))
        found = []
        for entry in raw:
            seq, _, payload = decode(entry).partition("|")
            data = json.loads(payload)
            found.append(ControlCommand(seq=int(seq), body=data["body"], time=float(data["time"])))
        return found

    def command_cursor(self) -> int:
        seq = self._retry.call(lambda: self._redis.get(f"{self.prefix}:control:seq"))
        return 0 if seq is None else int(seq)

    def reply(self, reply_to: str, body: dict[str, Any], ttl: float = 60.0) -> None:
        self._run("control", ["reply", _ids.take(1)[0], RECEIPT_TTL_MS, "0", reply_to, _ms(ttl),
                              json.dumps(body, default=str)], again=3)

    def replies(self, reply_to: str, *, timeout: float,
                count: int | None = None) -> list[dict[str, Any]]:
        """Drain the box with LPOP, then wait for more in BLPOP (never longer than MAX_BLOCK).

        A reply popped by a command whose answer is lost with the connection is
        lost too: replies are best effort, like the commands that ask for them.
        """
        box = f"{self.prefix}:reply:{reply_to}"
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while True:
            want = REPLIES_BATCH if count is None else count - len(got)
            if want <= 0:
                return got
            popped = self._pop(box, want)
            got += [json.loads(item) for item in popped]
            if len(popped) == want:
                continue  # there may be more already, or count is reached
            remaining = deadline - time.monotonic()
            if remaining < 0.001:  # BLPOP 0 would block forever
                return got
            try:
                item = self._redis.blpop([box], timeout=min(remaining, MAX_BLOCK))
            except TRANSIENT:
                continue  # the next LPOP goes through the reconnector
            if item is not None:
                got.append(json.loads(item[1]))

    def _pop(self, box: str, count: int) -> list[bytes | str]:
        """Take up to ``count`` replies from the head of ``box`` without waiting."""
        popped = self._retry.call(lambda: self._redis.lpop(box, count))
        return popped if isinstance(popped, list) else []  # None: no such box

    def ping(self) -> None:
        """PING without backoff: tells at once whether the server can be reached.

        Tried twice, because the first attempt may land on a pooled connection the
        server has closed since (a restart, ``CLIENT KILL``); the second one reconnects.
        """
        try:
            self._redis.ping()
        except TRANSIENT:
            self._retry.call(self._redis.ping, retry=False)

    def close(self) -> None:
        """Nothing to do: the connection pool is per process and shared (see redisconn)."""

    # == periodic tasks (beat): celeriac/beat/ =================================
    # Keep other features' methods outside this block (merges stay easy).
    def beat_runs(self, names: Sequence[str]) -> dict[str, float]:
        if not names:
            return {}
        values = self._retry.call(lambda: self._redis.hmget(f"{self.prefix}:beat", list(names)))
        return {name: float(decode(value)) for name, value in zip(names, values, strict=True)
                if value is not None}

    def beat_claim(self, name: str, previous: float | None, run_at: float,
                   messages: Sequence[OutgoingMessage]) -> bool:
        for message in messages:
            check_priority(message)
        if "beat" not in self._scripts:  # beat.lua, then publish.lua: one script
            self._scripts["beat"] = self._redis.register_script(_beat_source())
        ids = _ids.take(len(messages) + 1)
        args: list[Any] = [ids[-1], RECEIPT_TTL_MS, "0", name,
                           "" if previous is None else repr(previous), repr(run_at)]
        for message_id, message in zip(ids, messages, strict=False):
            args += (message_id, message.queue, message.priority, *_timing(message),
                     message.body)
        return bool(self._run("beat", args, again=2))
    # == end of periodic tasks (beat) =================================================

    # == rate and concurrency limits (issue 11; the script is lua/limits.lua) ==========
    def take_rate_token(self, task: str, rate: float, burst: int, ticket: str) -> float:
        interval = 1000.0 / rate
        tolerance = interval * (max(burst, 1) - 1)
        left = self._run("limits", ["token", task, repr(interval), repr(tolerance), ticket,
                                    _ms(limits.EARLY), _ms(limits.TICKET_GRACE)])
        return float(decode(left)) / 1000.0

    def acquire_slot(self, task: str, limit: int, holder: str, ttl: float) -> bool:
        return bool(self._run("limits", ["acquire", task, limit, holder, _ms(ttl)]))

    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        if slots:
            self._run("limits", ["renew", _ms(ttl), *(x for slot in slots for x in slot)])

    def release_slot(self, task: str, holder: str) -> None:
        self._run("limits", ["release", task, holder])

    def slots_in_use(self, task: str) -> int:
        return int(self._run("limits", ["count", task]))

    def set_rate_limit(self, task: str, rate: str) -> None:
        self._retry.call(lambda: self._redis.hset(f"{self.prefix}:rl:overrides", task, rate))

    def rate_limits(self) -> dict[str, str]:
        found = self._retry.call(lambda: self._redis.hgetall(f"{self.prefix}:rl:overrides"))
        return {decode(task): decode(rate) for task, rate in found.items()}
    # == end of rate and concurrency limits ============================================


@cache
def _beat_source() -> str:
    lua = resources.files("celeriac.brokers") / "lua"
    return _script_source("beat") + "\n" + (lua / "publish.lua").read_text()
