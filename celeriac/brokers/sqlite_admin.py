"""The SQLite broker's read model and admin actions for dashboards.

A mixin of :class:`celeriac.brokers.sqlite.SQLiteBroker`. Every listing reads one
index in its own order, so a page costs a seek plus ``limit`` rows (an ``OFFSET``
steps over index entries, not rows), and a total is a count over an index range,
never a scan of the table:

* ready: ``messages_claim`` ``(queue, priority DESC, available_at)``, one probe per
  priority, the ready rows being a prefix of each (claim order, as a fetch takes them);
* scheduled and retries: ``messages_delayed`` ``(queue, retry, available_at) WHERE
  delayed = 1``. ``delayed`` is 1 while a message waits for its eta, countdown or
  requeue delay and goes to 0 when it is claimed, so the partial index holds the
  delayed messages only; ``retry`` is 1 for a task's retry (its ``retries`` header
  above 0, read at publish for messages with an eta only);
* dead: ``dead_letters_queue`` (newest first: the index ends with the seq), and
  ``dead_letters_message`` to act on dead letters by id.

``published_at`` (messages and dead letters) is when a message was published: NULL
for rows an older celeriac wrote, shown as their ``available_at``. Paused queues are
the table ``paused_queues``. Bulk actions go in chunks of :data:`ADMIN_CHUNK` rows per
transaction, so a dashboard requeueing 100,000 dead letters never holds the write
lock long enough to stall the workers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.brokers.base import QueueStats
from celeriac.brokers.browse import (
    DELETABLE,
    DeletableKind,
    Kind,
    MessageSummary,
    Page,
    check_page,
    summarize,
)

T = TypeVar("T")

ADMIN_SCHEMA = """;
-- the dashboard (celeriac.brokers.sqlite_admin): paused queues
CREATE TABLE IF NOT EXISTS paused_queues (name TEXT PRIMARY KEY) WITHOUT ROWID
"""
#: Created by the first write of a broker, once ``delayed`` and ``retry`` exist (a file of
#: an older version gets them then).
DELAYED_INDEX = ("CREATE INDEX IF NOT EXISTS messages_delayed"
                 " ON messages (queue, retry, available_at) WHERE delayed = 1")
#: Rows one transaction of a bulk action handles.
ADMIN_CHUNK = 2000

_PRIORITIES = "9, 8, 7, 6, 5, 4, 3, 2, 1, 0"
_READY = f"queue = ?1 AND priority IN ({_PRIORITIES}) AND available_at <= ?2"
_DELAYED = "queue = ?1 AND retry = ?3 AND delayed = 1 AND available_at > ?2"
_COLUMNS = "id, body, published_at, available_at, delivery_count"
_PAGES = {
    "ready": f"SELECT {_COLUMNS} FROM messages WHERE {_READY}"
             " ORDER BY priority DESC, available_at, id LIMIT ?4 OFFSET ?5",
    "delayed": f"SELECT {_COLUMNS} FROM messages WHERE {_DELAYED}"
               " ORDER BY available_at LIMIT ?4 OFFSET ?5",
    "dead": "SELECT message_id, body, published_at, failed_at, delivery_count, reason"
            " FROM dead_letters WHERE queue = ?1 ORDER BY seq DESC LIMIT ?4 OFFSET ?5",
}
_TOTALS = {
    "ready": f"SELECT count(*), ?3 FROM messages WHERE {_READY}",
    "delayed": f"SELECT count(*) FROM messages WHERE {_DELAYED}",
    "dead": "SELECT count(*), ?2, ?3 FROM dead_letters WHERE queue = ?1",
}
# Since when the oldest ready message of queue ?1 has waited: one probe per priority.
_OLDEST = """
    SELECT min((SELECT available_at FROM messages
                WHERE queue = ?1 AND priority = p.column1 AND available_at <= ?2
                ORDER BY available_at LIMIT 1))
    FROM (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS p
"""
# Every queue holding a message, one index seek per queue rather than a scan (a file of an
# older version may have messages of queues missing from ``queues``).
_QUEUES_HELD = """
    WITH RECURSIVE q(name) AS (
        SELECT min(queue) FROM messages
        UNION ALL
        SELECT (SELECT min(queue) FROM messages WHERE queue > q.name) FROM q
        WHERE q.name IS NOT NULL)
    SELECT name FROM q WHERE name IS NOT NULL
"""
# In flight: few rows (what the workers hold), found through the consumer index.
_IN_FLIGHT = """
    SELECT queue, count(*) FROM messages INDEXED BY messages_consumer
    WHERE consumer IS NOT NULL AND available_at > ?1 GROUP BY queue
"""
_REQUEUE_ROWS = {
    True: "SELECT seq, queue, body, priority FROM dead_letters INDEXED BY dead_letters_message"
          " WHERE queue = ?1 AND message_id IN (SELECT value FROM json_each(?2))",
    False: "SELECT seq, queue, body, priority FROM dead_letters WHERE queue = ?1"
           " ORDER BY seq LIMIT ?2",
}
_DELETE = {
    (True, "dead"): "DELETE FROM dead_letters INDEXED BY dead_letters_message WHERE queue = ?1"
                    " AND message_id IN (SELECT value FROM json_each(?4))",
    (False, "dead"): "DELETE FROM dead_letters WHERE seq IN (SELECT seq FROM dead_letters"
                     " WHERE queue = ?1 ORDER BY seq LIMIT ?4)",
    (True, "delayed"): f"DELETE FROM messages NOT INDEXED WHERE {_DELAYED}"
                       " AND id IN (SELECT value FROM json_each(?4))",
    (False, "delayed"): f"DELETE FROM messages WHERE id IN (SELECT id FROM messages"
                        f" WHERE {_DELAYED} LIMIT ?4)",
}
_ENQUEUE_NOW = """
    UPDATE messages NOT INDEXED SET available_at = ?2, delayed = 0
    WHERE queue = ?1 AND delayed = 1 AND consumer IS NULL AND available_at > ?2
    AND id IN (SELECT value FROM json_each(?3))
"""


def _int_ids(ids: Sequence[str]) -> str:
    """Ids as a JSON array of integers (ids that are not ours never match)."""
    return json.dumps([int(i) for i in ids if i.isascii() and i.isdigit()])


def _apply(action: Callable[[sqlite3.Connection, str | int], int], chosen: str | int,
           conn: sqlite3.Connection) -> int:
    return action(conn, chosen)


def _row(queue: str, kind: str, row: tuple[Any, ...]) -> MessageSummary:
    message_id, body, published, at, deliveries = row[:5]
    if kind == "dead":
        return summarize(str(message_id), queue, body, enqueued_at=published or at,
                         deliveries=deliveries, reason=row[5], failed_at=at)
    return summarize(str(message_id), queue, body, enqueued_at=published or at,
                     due_at=at if kind in ("scheduled", "retries") else None,
                     deliveries=deliveries)


class SQLiteAdmin:
    """Mixed into :class:`~celeriac.brokers.sqlite.SQLiteBroker`."""

    if TYPE_CHECKING:
        _columns_checked: bool

        def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    def _indexed_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read that needs ``messages_delayed``: a broker that has not written yet makes
        sure it exists first (the first write adds it to an older file)."""
        if not self._columns_checked:
            self._write(lambda conn: None)
        return self._read(fn)

    def browse(self, queue: str, kind: Kind, *, offset: int = 0, limit: int = 50) -> Page:
        check_page(kind, offset, limit)
        table = kind if kind in ("ready", "dead") else "delayed"
        retry = int(kind == "retries")

        def read(conn: sqlite3.Connection) -> Page:
            now = time.time()
            total = conn.execute(_TOTALS[table], (queue, now, retry)).fetchone()[0]
            rows = conn.execute(_PAGES[table], (queue, now, retry, limit, offset)).fetchall()
            return Page(items=[_row(queue, kind, row) for row in rows], total=int(total),
                        offset=offset)

        return self._indexed_read(read)

    def stats(self) -> dict[str, QueueStats]:
        def count(conn: sqlite3.Connection) -> dict[str, QueueStats]:
            now = time.time()
            paused = {name for (name,) in conn.execute("SELECT name FROM paused_queues")}
            in_flight = dict(conn.execute(_IN_FLIGHT, (now,)).fetchall())
            dead = dict(conn.execute("SELECT queue, count(*) FROM dead_letters GROUP BY queue"))
            names = {name for (name,) in conn.execute("SELECT name FROM queues")} | set(dead)
            names.update(name for (name,) in conn.execute(_QUEUES_HELD))
            result = {}
            for name in sorted(names):
                ready = conn.execute(_TOTALS["ready"], (name, now, 0)).fetchone()[0]
                scheduled = sum(conn.execute(_TOTALS["delayed"], (name, now, retry)).fetchone()[0]
                                for retry in (0, 1))
                oldest = conn.execute(_OLDEST, (name, now)).fetchone()[0]
                result[name] = QueueStats(
                    ready=ready, scheduled=scheduled, in_flight=in_flight.get(name, 0),
                    dead=dead.get(name, 0), paused=name in paused,
                    oldest_age=None if oldest is None else max(now - oldest, 0.0))
            return result

        return self._indexed_read(count)

    def requeue_dead(self, queue: str, ids: Sequence[str] | None) -> int:
        def requeue(conn: sqlite3.Connection, chosen: str | int) -> int:
            rows = conn.execute(_REQUEUE_ROWS[ids is not None], (queue, chosen)).fetchall()
            now = time.time()
            conn.executemany("INSERT INTO messages (queue, body, priority, available_at,"
                             " published_at) VALUES (?, ?, ?, ?, ?)",
                             [(q, body, priority, now, now) for _, q, body, priority in rows])
            conn.execute("DELETE FROM dead_letters WHERE seq IN (SELECT value FROM json_each(?))",
                         (json.dumps([row[0] for row in rows]),))
            return len(rows)

        return self._in_chunks(requeue, ids)

    def delete_messages(self, queue: str, kind: DeletableKind,
                        ids: Sequence[str] | None) -> int:
        check_page(kind, 0, 0, DELETABLE)
        table = "dead" if kind == "dead" else "delayed"
        retry = int(kind == "retries")

        def delete(conn: sqlite3.Connection, chosen: str | int) -> int:
            sql = _DELETE[ids is not None, table]
            return int(conn.execute(sql, (queue, time.time(), retry, chosen)).rowcount)

        return self._in_chunks(delete, ids)

    def _in_chunks(self, action: Callable[[sqlite3.Connection, str | int], int],
                   ids: Sequence[str] | None) -> int:
        """Run ``action`` on ``ids`` (a JSON array) or, for None, on ADMIN_CHUNK rows at a
        time until a chunk comes back short; one transaction per chunk."""
        total = 0
        if ids is not None:
            for start in range(0, len(ids), ADMIN_CHUNK):
                chunk = _int_ids(ids[start:start + ADMIN_CHUNK])
                total += self._write(partial(_apply, action, chunk))
            return total
        while True:
            done = self._write(partial(_apply, action, ADMIN_CHUNK))
            total += done
            if done < ADMIN_CHUNK:
                return total

    def enqueue_now(self, queue: str, ids: Sequence[str]) -> int:
        chosen = _int_ids(ids)
        return int(self._write(lambda conn: conn.execute(
            _ENQUEUE_NOW, (queue, time.time(), chosen)).rowcount))

    def pause(self, queue: str) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO paused_queues (name) VALUES (?)", (queue,)))

    def resume(self, queue: str) -> None:
        self._write(lambda conn: conn.execute("DELETE FROM paused_queues WHERE name = ?",
                                              (queue,)))

    def paused(self) -> set[str]:
        return {name for (name,) in self._read(lambda conn: conn.execute(
            "SELECT name FROM paused_queues").fetchall())}
