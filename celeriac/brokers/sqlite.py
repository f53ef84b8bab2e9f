"""The embedded default broker: one SQLite file (``sqlite:///celeriac.db``).

Any number of processes on one machine can share the file: every change runs
in a ``BEGIN IMMEDIATE`` transaction (see :class:`celeriac.sqlitedb.Database`),
so two consumers can never claim the same message, and readers never wait in
WAL mode. Times are ``time.time()`` because the file is shared by processes
that have no common monotonic clock.

Schema and the one idea behind it
---------------------------------
``messages`` has a single time column, ``available_at``: the time from which the
message may be claimed. A published message gets its eta (or now); a claimed
one gets its *lease deadline*. So "ready" is simply ``available_at <= now``,
which covers fresh messages, due etas and expired leases alike, and::

    ready      available_at <= now
    scheduled  available_at >  now AND consumer IS NULL
    in flight  available_at >  now AND consumer IS NOT NULL

This keeps the claim query on one index, ``(queue, priority DESC,
available_at)``: within a (queue, priority) pair the claimable rows are a prefix
of the index, so claiming N messages reads about N index entries however many
messages are scheduled or in flight. (With a separate lease column, in-flight
rows would sit at the front of the index and every claim would step over
them.) A waiting fetch also wakes for free when a lease runs out, because the
earliest ``available_at`` is also the earliest lease deadline.

``suspect`` is 0, or the group size of a message released from a worker process
that died running it beside other tasks (see ``Broker.release_consumer``; files
of older versions hold 1, "alone"): claims return it, requeues and lease expiry
leave it alone, and it goes when the row does.
Files created before the column existed get it on the first write of a broker
(:data:`ADDED_COLUMNS`): ``ALTER TABLE ... ADD COLUMN`` with a constant default
only rewrites the schema, not the rows, so it is instant on any size of file.

``token`` is the fencing token: it goes up by one on every claim and never
down. ``ack``/``renew``/``requeue``/``dead_letter`` act only on rows that are
claimed (``consumer IS NOT NULL``) under the presented token. Ids come from
``AUTOINCREMENT`` so they are never reused: with plain rowids, a stale ack for a
deleted message could hit a new message that got the same id and token.

``queues`` remembers every queue name ever published to, so ``stats()`` keeps
listing a queue after it drains; ``dead_letters`` keeps failed messages with
their reason; ``workers`` holds heartbeats; ``events`` holds worker events
(``AUTOINCREMENT`` again: a seq is never reused, so ``events(after=seq)`` is a
stable cursor). Only the newest ``events_kept`` events count; the older rows are
deleted in one primary-key range delete each time the seq crosses a multiple of
a tenth of the cap, so trimming costs next to nothing per emit.

``published_at``, ``retry`` and ``delayed`` serve the dashboard's listings, with the
partial index ``messages_delayed`` over the delayed messages only (claims set
``delayed`` to 0, so the claim index stays what it was): see
:mod:`celeriac.brokers.sqlite_admin`.

Revocations, remote-control commands and reply boxes have tables of their own
in the same file, described with the mixin that owns them
(:mod:`celeriac.brokers.sqlite_control`); so do rate and concurrency limits
(:mod:`celeriac.brokers.sqlite_limits`), and metric rollups
(:mod:`celeriac.brokers.metrics_sqlite`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

from celeriac.brokers import sqlite_limits
from celeriac.brokers.base import (
    Broker,
    DeadLetter,
    Delivery,
    OutgoingMessage,
    WorkerEvent,
    WorkerInfo,
    check_priority,
    max_deliveries_reason,
)
from celeriac.brokers.browse import is_retry
from celeriac.brokers.metrics_sqlite import METRICS_SCHEMA, SQLiteMetrics
from celeriac.brokers.sqlite_admin import ADMIN_SCHEMA, DELAYED_INDEX, SQLiteAdmin
from celeriac.brokers.sqlite_control import CONTROL_SCHEMA, SQLiteControl
from celeriac.brokers.sqlite_limits import LIMITS_SCHEMA
from celeriac.exceptions import BrokerError, BrokerUnreachable
from celeriac.fastjson import dumps, loads
from celeriac.sqlitedb import Database, path_from_url

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    priority INTEGER NOT NULL,
    available_at REAL NOT NULL,
    consumer TEXT,
    token INTEGER NOT NULL DEFAULT 0,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    suspect INTEGER NOT NULL DEFAULT 0,
    published_at REAL,
    retry INTEGER NOT NULL DEFAULT 0,
    delayed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_claim ON messages (queue, priority DESC, available_at);
CREATE INDEX IF NOT EXISTS messages_consumer ON messages (consumer) WHERE consumer IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    priority INTEGER NOT NULL,
    reason TEXT NOT NULL,
    delivery_count INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    published_at REAL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue);
CREATE INDEX IF NOT EXISTS dead_letters_message ON dead_letters (message_id);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    last_seen REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    worker TEXT NOT NULL,
    data TEXT NOT NULL
);
""" + CONTROL_SCHEMA + """;
-- periodic tasks (celeriac/beat/): each entry's last run
CREATE TABLE IF NOT EXISTS beat_runs (name TEXT PRIMARY KEY, last_run REAL NOT NULL) WITHOUT ROWID;
""" + LIMITS_SCHEMA + ADMIN_SCHEMA + ";\n" + METRICS_SCHEMA

#: Columns added to a table after files were already created without them:
#: (table, column, declaration). ``CREATE TABLE IF NOT EXISTS`` leaves an older
#: file's table as it was, so :func:`_add_missing_columns` adds these there.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("messages", "suspect", "INTEGER NOT NULL DEFAULT 0"),
    ("messages", "published_at", "REAL"),
    ("messages", "retry", "INTEGER NOT NULL DEFAULT 0"),
    ("messages", "delayed", "INTEGER NOT NULL DEFAULT 0"),
    ("dead_letters", "published_at", "REAL"),
)

#: Longest sleep between two looks at ``PRAGMA data_version`` while waiting.
#: A look costs microseconds (it reads the WAL index in shared memory), so a
#: waiting fetch notices a publish from another process within a few ms.
WAKE_CHECK = 0.005

_PRIORITIES = "9, 8, 7, 6, 5, 4, 3, 2, 1, 0"


def _insert(conn: sqlite3.Connection, messages: Sequence[OutgoingMessage]) -> list[str]:
    """Store ``messages`` in the open transaction; their ids in order."""
    now = time.time()
    cursor = conn.cursor()
    ids: list[str] = []
    # One execute per row is what gives each row's id exactly (via
    # lastrowid); with the statement cached it costs a few µs per row.
    for m in messages:
        if m.eta is None or m.eta <= now:
            row = (m.queue, bytes(m.body), m.priority, now, now, 0, 0)
        else:  # delayed: filed under retries or scheduled (messages_delayed)
            row = (m.queue, bytes(m.body), m.priority, m.eta, now, is_retry(m.body), 1)
        cursor.execute(
            "INSERT INTO messages (queue, body, priority, available_at, published_at, retry,"
            " delayed) VALUES (?,?,?,?,?,?,?)", row)
        ids.append(str(cursor.lastrowid))
    conn.executemany("INSERT OR IGNORE INTO queues (name) VALUES (?)",
                     [(q,) for q in {m.queue for m in messages}])
    return ids

# Rows claimed by the delivery whose [id, token] pair is in the JSON array ?1.
# Rows are found by primary key, so the cost is per delivery, not per table row.
_HELD = """
    SELECT m.id FROM json_each(?1) AS d JOIN messages AS m
    ON m.id = d.value ->> 0 AND m.token = d.value ->> 1 AND m.consumer IS NOT NULL
"""
_ACK = f"DELETE FROM messages WHERE id IN ({_HELD}) RETURNING id, token"
_RENEW = f"UPDATE messages SET available_at = ?2 WHERE id IN ({_HELD}) RETURNING id, token"
_REQUEUE = f"""
    UPDATE messages SET consumer = NULL, available_at = ?2, delayed = ?4,
        delivery_count = CASE WHEN ?3 THEN max(delivery_count - 1, 0) ELSE delivery_count END
    WHERE id IN ({_HELD}) RETURNING id, token
"""
_UNCLAIM = f"""
    DELETE FROM messages WHERE id IN ({_HELD})
    RETURNING id, token, queue, body, priority, delivery_count, published_at
"""
_BURY = """
    INSERT INTO dead_letters (message_id, queue, body, priority, reason, delivery_count,
                              failed_at, published_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_CLAIM = """
    UPDATE messages SET consumer = ?2, available_at = ?3, token = token + 1,
        delivery_count = delivery_count + 1, delayed = 0
    WHERE id IN (SELECT value FROM json_each(?1))
    RETURNING id, queue, body, priority, token, delivery_count, suspect, published_at
"""
# Everything consumer ?3 holds, ready at ?1: ids in JSON array ?2 (started) keep
# their charge, the others are uncharged; ids in ?4 (suspects) are marked suspect with
# group ?5 (a smaller group already there stays).
_RELEASE = """
    UPDATE messages SET consumer = NULL, available_at = ?1,
        delivery_count = CASE WHEN id IN (SELECT value FROM json_each(?2))
                         THEN delivery_count ELSE max(delivery_count - 1, 0) END,
        suspect = CASE WHEN id IN (SELECT value FROM json_each(?4))
                  THEN CASE WHEN suspect > 0 AND suspect < ?5 THEN suspect ELSE ?5 END
                  ELSE suspect END
    WHERE consumer = ?3
"""
# The earliest time after ?2 (now) at which anything in the queues of JSON array
# ?1 becomes claimable: one index probe per (queue, priority) pair, not a scan.
_NEXT_DUE = """
    SELECT min((SELECT available_at FROM messages
                WHERE queue = q.value AND priority = p.column1 AND available_at > ?2
                ORDER BY available_at LIMIT 1))
    FROM json_each(?1) AS q,
         (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS p
"""


@lru_cache(maxsize=64)
def _candidates_sql(queue_count: int) -> str:
    """The ids to claim next from ``queue_count`` queues, best first.

    One branch per queue. In a branch, ``priority IN (9..0)`` makes SQLite
    probe the index once per priority, in descending order, and read the ready
    rows of each in ``available_at, id`` order (the index ends with the rowid),
    stopping after the limit: no sort, no scan of scheduled or in-flight rows.
    The outer query merges at most ``queue_count * limit`` rows, which is what
    keeps several queues fair (oldest first across them) in one statement.
    Parameters: ``?1`` now, ``?2`` limit, then one queue name per branch.
    """
    branch = ("SELECT * FROM (SELECT id, priority, available_at FROM messages"
              f" WHERE queue = ?{{n}} AND priority IN ({_PRIORITIES}) AND available_at <= ?1"
              " ORDER BY priority DESC, available_at, id LIMIT ?2)")
    union = " UNION ALL ".join(branch.format(n=3 + i) for i in range(queue_count))
    return f"SELECT id FROM ({union}) ORDER BY priority DESC, available_at, id LIMIT ?2"


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Give a file created by an older celeriac the columns of :data:`ADDED_COLUMNS`.

    Runs inside a write transaction, so of several processes opening the same old
    file at once, one adds the column and the others find it there.
    """
    for table, column, declaration in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            if (table, column) == ("messages", "delayed"):
                # The messages an older version scheduled: listed as scheduled from now on.
                conn.execute("UPDATE messages SET delayed = 1 WHERE consumer IS NULL"
                             " AND available_at > ?", (time.time(),))
    conn.execute(DELAYED_INDEX)  # on columns an old file has only now


def _ids(ids: Collection[str]) -> str:
    """Message ids as a JSON array of integers (ids that are not ours never match)."""
    return json.dumps([int(i) for i in ids if i.isascii() and i.isdigit()])


def _pairs(deliveries: Sequence[Delivery]) -> str:
    """The deliveries as a JSON array of [id, token] (ids that are not ours never match)."""
    pairs = [[int(d.id), d.token] for d in deliveries if d.id.isascii() and d.id.isdigit()]
    return json.dumps(pairs, separators=(",", ":"))


def _matched(deliveries: Sequence[Delivery], rows: Iterable[tuple[Any, ...]]) -> list[bool]:
    """Per delivery, whether a returned row was its (id, token); each row counts once."""
    hits = {(str(row[0]), int(row[1])) for row in rows}
    result = []
    for delivery in deliveries:
        key = (delivery.id, delivery.token)
        result.append(key in hits)
        hits.discard(key)
    return result


class _ChangeWatch:
    """Tells a waiting fetch whether anyone committed since its last claim.

    ``PRAGMA data_version`` is a counter *per connection*, and the connection
    depends on the thread that runs the call: under a green pool (or in a
    monkey-patched client) every call may land on a different thread of the
    hub's pool. So a reading is only compared with an earlier reading of the
    same connection; a connection never seen before counts as "changed" (one
    claim too many is harmless, a missed wake-up is not).

    ``data_version`` ignores the connection's *own* commits, and the pool thread
    that answers the wait may be the very one that ran another greenlet's
    publish; so a reading also carries ``total_changes``, which counts exactly
    those.
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[int, int]] = {}

    def note(self, connection: int, version: tuple[int, int]) -> bool:
        """Record a reading; True if it differs from this connection's last one."""
        previous = self._seen.get(connection)
        self._seen[connection] = version
        return previous != version


def _data_version(conn: sqlite3.Connection) -> tuple[int, tuple[int, int]]:
    """(which connection, its change signature: others' commits and its own)."""
    return id(conn), (int(conn.execute("PRAGMA data_version").fetchone()[0]), conn.total_changes)


class SQLiteBroker(SQLiteAdmin, SQLiteControl, SQLiteMetrics, Broker):
    """Messages in a SQLite file, claimed under leases in ``BEGIN IMMEDIATE`` transactions."""

    schemes = ("sqlite",)
    shared_between_processes = True

    def __init__(self, url: str, *, max_deliveries: int = 5, poll_interval: float = 0.05,
                 pool_limit: int = 32) -> None:
        super().__init__(url, max_deliveries=max_deliveries, poll_interval=poll_interval,
                         pool_limit=pool_limit)
        self._db = Database(path_from_url(url), SCHEMA)
        #: Whether this broker made sure the file has :data:`ADDED_COLUMNS` (on its
        #: first write; reads never touch those columns, so they need not wait).
        self._columns_checked = False

    # -- plumbing --------------------------------------------------------------------
    def _fail(self, exc: sqlite3.Error) -> BrokerError:
        return BrokerError(f"SQLite broker {self._db.path!r}: {exc}")

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._columns_checked:
                return self._db.write(fn)

            def upgrade_first(conn: sqlite3.Connection) -> T:
                _add_missing_columns(conn)
                return fn(conn)

            result = self._db.write(upgrade_first)
            self._columns_checked = True
            return result
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return self._db.read(fn)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    # -- producing -------------------------------------------------------------------
    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        for message in messages:
            check_priority(message)
        if not messages:
            return []

        return self._write(lambda conn: _insert(conn, messages))

    # -- consuming -------------------------------------------------------------------
    def _claim(self, conn: sqlite3.Connection, queues: Sequence[str], count: int,
               consumer: str, lease: float, now: float) -> list[Delivery]:
        """Claim up to ``count`` messages; burn those past ``max_deliveries`` on the way.

        Two statements per round: pick the ids in order, then claim them all
        with ``RETURNING`` (the returned rows come in no defined order, so the
        picked order is kept in Python). A second round only happens when some
        picked messages turned out to be over their delivery limit.
        """
        order: dict[int, int] = {}
        claimed: list[tuple[Any, ...]] = []
        while len(claimed) < count:
            wanted = count - len(claimed)
            # Skipping ids seen in an earlier round matters only for lease <= 0,
            # where a row claimed a moment ago still looks claimable.
            ids = [row[0] for row in conn.execute(_candidates_sql(len(queues)),
                                                  (now, wanted, *queues)) if row[0] not in order]
            if not ids:
                break
            order.update((message_id, len(order)) for message_id in ids)
            rows = conn.execute(_CLAIM, (json.dumps(ids), consumer, now + lease)).fetchall()
            spent = [row for row in rows if row[5] > self.max_deliveries]
            claimed.extend(row for row in rows if row[5] <= self.max_deliveries)
            if not spent:
                break
            conn.execute("DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?))",
                         (json.dumps([row[0] for row in spent]),))
            conn.executemany(_BURY, [
                (row[0], row[1], row[2], row[3],
                 max_deliveries_reason(self.max_deliveries, suspect=row[6] == 1), row[5] - 1,
                 now, row[7])
                for row in spent])
        claimed.sort(key=lambda row: order[row[0]])
        return [Delivery(id=str(row[0]), queue=row[1], body=row[2], priority=row[3],
                         token=row[4], delivery_count=row[5], suspect=int(row[6]))
                for row in claimed]

    def fetch(self, queues: Sequence[str], count: int, *, consumer: str, lease: float,
              timeout: float = 0.0) -> list[Delivery]:
        queues = list(dict.fromkeys(queues))
        if count <= 0 or not queues:
            return []
        deadline = time.monotonic() + timeout
        watch = _ChangeWatch()
        queue_list = json.dumps(queues)

        def attempt(conn: sqlite3.Connection) -> tuple[list[Delivery], float | None]:
            # Read data_version inside the write transaction: nobody else can
            # commit until we do, so every later change shows up as a new value.
            watch.note(*_data_version(conn))
            now = time.time()
            claimed = self._claim(conn, queues, count, consumer, lease, now)
            if claimed or timeout <= 0:
                return claimed, None
            due: float | None = conn.execute(_NEXT_DUE, (queue_list, now)).fetchone()[0]
            return claimed, due

        while True:
            claimed, due = self._write(attempt)
            if claimed or not self._wait(deadline, due, watch):
                return claimed

    def _wait(self, deadline: float, due: float | None, watch: _ChangeWatch) -> bool:
        """Sleep until another connection commits or ``due`` arrives; False at the deadline."""
        step = min(WAKE_CHECK, self.poll_interval)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            until_due = float("inf") if due is None else due - time.time()
            if until_due <= 0:
                return True
            time.sleep(max(min(step, remaining, until_due), 0.0))
            if watch.note(*self._read(_data_version)):
                return True

    def _settle(self, sql: str, deliveries: Sequence[Delivery], *args: Any) -> list[bool]:
        """Run a token-checked statement over ``deliveries``; per delivery, whether it acted."""
        if not deliveries:
            return []
        pairs = _pairs(deliveries)
        rows = self._write(lambda conn: conn.execute(sql, (pairs, *args)).fetchall())
        return _matched(deliveries, rows)

    def ack(self, deliveries: Sequence[Delivery]) -> list[bool]:
        return self._settle(_ACK, deliveries)

    def renew(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        return self._settle(_RENEW, deliveries, time.time() + lease)

    def requeue(self, deliveries: Sequence[Delivery], *, delay: float = 0.0,
                uncharge: bool = False) -> list[bool]:
        return self._settle(_REQUEUE, deliveries, time.time() + delay, uncharge, delay > 0)

    def dead_letter(self, deliveries: Sequence[Delivery], reason: str) -> list[bool]:
        if not deliveries:
            return []
        pairs = _pairs(deliveries)

        def bury(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            now = time.time()
            rows = conn.execute(_UNCLAIM, (pairs,)).fetchall()
            conn.executemany(_BURY, [(row[0], row[2], row[3], row[4], reason, row[5], now,
                                      row[6]) for row in rows])
            return rows

        return _matched(deliveries, self._write(bury))

    def release_consumer(self, consumer: str, *, started: Collection[str] = (),
                         suspects: Collection[str] = (), group: int = 1) -> int:
        started_ids, suspect_ids = _ids(started), _ids(suspects)

        def release(conn: sqlite3.Connection) -> int:
            return conn.execute(_RELEASE, (time.time(), started_ids, consumer,
                                           suspect_ids, max(group, 1))).rowcount

        return self._write(release)

    # -- inspection and maintenance --------------------------------------------------
    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        def select(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT message_id, queue, body, reason, delivery_count, failed_at"
                " FROM dead_letters WHERE ?1 IS NULL OR queue = ?1 ORDER BY seq DESC LIMIT ?2",
                (queue, max(limit, 0)))
            return [DeadLetter(id=str(row[0]), queue=row[1], body=row[2], reason=row[3],
                               delivery_count=row[4], failed_at=row[5]) for row in rows]

        return self._read(select)

    def purge(self, queue: str | None = None) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM messages WHERE (?1 IS NULL OR queue = ?1)"
                " AND (consumer IS NULL OR available_at <= ?2)", (queue, time.time())).rowcount

        return self._write(delete)

    def heartbeat(self, worker: str, info: dict[str, Any], ttl: float) -> None:
        # default=str: a heartbeat must not fail because of one odd value in ``info``.
        payload = json.dumps(info, default=str)

        def beat(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "INSERT INTO workers (name, info, last_seen, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET info = excluded.info,"
                " last_seen = excluded.last_seen, expires_at = excluded.expires_at",
                (worker, payload, now, now + ttl))

        self._write(beat)

    def forget_worker(self, worker: str) -> None:
        self._write(lambda conn: conn.execute("DELETE FROM workers WHERE name = ?", (worker,)))

    def workers(self) -> list[WorkerInfo]:
        rows = self._read(lambda conn: conn.execute(
            "SELECT name, info, last_seen FROM workers WHERE expires_at > ? ORDER BY name",
            (time.time(),)).fetchall())
        return [WorkerInfo(name=name, info=json.loads(info), last_seen=last_seen)
                for name, info, last_seen in rows]

    def reap_workers(self) -> list[WorkerInfo]:
        # One write transaction: a second node reaping at the same time waits for it
        # and then finds the rows gone.
        def reap(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
            now = time.time()
            rows = conn.execute("SELECT name, info, last_seen FROM workers WHERE expires_at <= ?",
                                (now,)).fetchall()
            conn.execute("DELETE FROM workers WHERE expires_at <= ?", (now,))
            return rows

        return sorted((WorkerInfo(name=name, info=json.loads(info), last_seen=last_seen)
                       for name, info, last_seen in self._write(reap)), key=lambda w: w.name)

    def emit(self, events: Sequence[WorkerEvent]) -> None:
        if not events:
            return
        # default=str: an event must not fail because of one odd value in ``data``.
        now = time.time()
        rows = [(e.time or now, e.type, e.worker, dumps(e.data, default=str).decode())
                for e in events]
        kept = self.events_kept
        step = max(kept // 10, 1)

        def insert(conn: sqlite3.Connection) -> None:
            cursor = conn.cursor()
            first = last = 0
            for row in rows:
                cursor.execute("INSERT INTO events (time, type, worker, data) VALUES (?,?,?,?)",
                               row)
                last = int(cursor.lastrowid or 0)
                first = first or last
            if (first - 1) // step != last // step:
                conn.execute("DELETE FROM events WHERE seq <= ?", (last - kept,))

        self._write(insert)

    def events(self, after: int = 0, limit: int = 100) -> list[WorkerEvent]:
        kept = self.events_kept

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            # Rows past the cap that the last trim left count as gone already.
            return conn.execute(
                "SELECT seq, time, type, worker, data FROM events WHERE seq > ?1"
                " AND seq > (SELECT coalesce(max(seq), 0) FROM events) - ?2"
                " ORDER BY seq LIMIT ?3", (after, kept, max(limit, 0))).fetchall()

        return [WorkerEvent(seq=seq, time=when, type=kind, worker=worker, data=loads(data))
                for seq, when, kind, worker, data in self._read(select)]

    def events_of(self, task_id: str, after: int, until: int) -> list[WorkerEvent]:
        """Rows whose JSON holds the id are picked in SQL (``instr``: no row is decoded
        but those), then checked exactly: the whole log (10,000 events carrying stacks)
        is read in a few ms where decoding every row took ~300 ms."""
        kept = self.events_kept
        needle = dumps(task_id).decode()  # as the stored JSON writes it: escapes and all

        def select(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "SELECT seq, time, type, worker, data FROM events WHERE seq > ?1 AND seq <= ?2"
                " AND seq > (SELECT coalesce(max(seq), 0) FROM events) - ?3"
                " AND instr(data, ?4) > 0 ORDER BY seq", (after, until, kept, needle)).fetchall()

        found = [WorkerEvent(seq=seq, time=when, type=kind, worker=worker, data=loads(data))
                 for seq, when, kind, worker, data in self._read(select)]
        return [event for event in found if event.data.get("uuid") == task_id]

    def newest_event_seq(self) -> int:
        """One read: the max of the table's integer primary key (the end of its b-tree)."""
        def newest(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

        return self._read(newest)

    def ping(self) -> None:
        try:
            self._db.read(lambda conn: conn.execute("SELECT 1 FROM messages LIMIT 1").fetchall())
        except sqlite3.Error as exc:
            raise BrokerUnreachable(
                f"cannot use SQLite broker database {self._db.path!r}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # == periodic tasks (beat): celeriac/beat/ =================================
    # Keep other features' methods outside this block (merges stay easy).
    def beat_runs(self, names: Sequence[str]) -> dict[str, float]:
        if not names:
            return {}

        def read(conn: sqlite3.Connection) -> dict[str, float]:
            rows = conn.execute("SELECT name, last_run FROM beat_runs WHERE name IN "
                                "(SELECT value FROM json_each(?))", (json.dumps(list(names)),))
            return {name: last_run for name, last_run in rows}

        return self._read(read)

    def beat_claim(self, name: str, previous: float | None, run_at: float,
                   messages: Sequence[OutgoingMessage]) -> bool:
        for message in messages:
            check_priority(message)

        def claim(conn: sqlite3.Connection) -> bool:
            # One BEGIN IMMEDIATE transaction: the compare-and-set and the messages
            # commit together or not at all.
            if previous is None:
                changed = conn.execute("INSERT OR IGNORE INTO beat_runs (name, last_run) "
                                       "VALUES (?, ?)", (name, run_at)).rowcount
            else:
                changed = conn.execute("UPDATE beat_runs SET last_run = ? WHERE name = ? "
                                       "AND last_run = ?", (run_at, name, previous)).rowcount
            if changed != 1:
                return False
            if messages:
                _insert(conn, messages)
            return True

        return self._write(claim)
    # == end of periodic tasks (beat) =================================================

    # == rate and concurrency limits (issue 11; tables in celeriac.brokers.sqlite_limits) ==
    def take_rate_token(self, task: str, rate: float, burst: int, ticket: str) -> float:
        return self._write(lambda conn: sqlite_limits.take_token(conn, task, rate, burst, ticket,
                                                                 time.time()))

    def acquire_slot(self, task: str, limit: int, holder: str, ttl: float) -> bool:
        return self._write(lambda conn: sqlite_limits.acquire_slot(conn, task, limit, holder, ttl,
                                                                   time.time()))

    def renew_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> None:
        if slots:
            self._write(lambda conn: sqlite_limits.renew_slots(conn, slots, time.time() + ttl))

    def release_slot(self, task: str, holder: str) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM limit_slots WHERE task = ? AND holder = ?", (task, holder)))

    def slots_in_use(self, task: str) -> int:
        return int(self._read(lambda conn: conn.execute(
            "SELECT count(*) FROM limit_slots WHERE task = ? AND expires > ?",
            (task, time.time())).fetchone()[0]))

    def set_rate_limit(self, task: str, rate: str) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO rate_overrides (task, rate) VALUES (?, ?)", (task, rate)))

    def rate_limits(self) -> dict[str, str]:
        rows = self._read(lambda conn: conn.execute(
            "SELECT task, rate FROM rate_overrides").fetchall())
        return {task: rate for task, rate in rows}
    # == end of rate and concurrency limits ============================================
