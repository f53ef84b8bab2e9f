"""The AMQP broker's records in a SQLite state store (:class:`AmqpState` on a SQLiteBroker).

Every call is one transaction of the store broker's own :class:`~celeriac.sqlitedb.Database`
(through ``SQLiteBroker._write``/``_read``: per-thread and per-process connections, WAL,
``BEGIN IMMEDIATE`` with a busy timeout, SQLite errors raised as ``BrokerError``), so
thread and fork safety are the SQLite broker's. Tables, in the store's file:

``amqp_notes``
    one row per return note: ``seq`` (an explicit ``INTEGER PRIMARY KEY``, so the order of
    a message's notes survives ``VACUUM``, which may renumber implicit rowids), message
    ``id``, JSON ``data``, ``expires``. Adding a note moves the expiry of all its message's
    notes; expired rows are deleted by the next ``add_notes`` (reads skip them).
``amqp_scheduled``
    ``(queue, id) -> due`` of delayed copies; past-due rows go when a queue is counted
    and, for queues nobody counts again, when entries are added.
``amqp_purged``
    ``queue -> at``, the latest purge time (an older mark never overwrites a newer one).
``amqp_queues``
    every queue name the AMQP broker declared.

The tables are not part of the SQLite broker's own schema, so that module knows nothing
of RabbitMQ: they are created (``IF NOT EXISTS``, so files of any age keep working) in the
transaction of this object's first call, as the broker adds its newer columns.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar

from celeriac.brokers.amqp.state import NOTE_TTL, AmqpState, ReturnNote
from celeriac.brokers.sqlite import SQLiteBroker

T = TypeVar("T")

AMQP_SCHEMA = """
CREATE TABLE IF NOT EXISTS amqp_notes (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS amqp_notes_id ON amqp_notes (id);
CREATE INDEX IF NOT EXISTS amqp_notes_expires ON amqp_notes (expires);
CREATE TABLE IF NOT EXISTS amqp_scheduled (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    due REAL NOT NULL,
    PRIMARY KEY (queue, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS amqp_scheduled_due ON amqp_scheduled (due);
CREATE TABLE IF NOT EXISTS amqp_purged (queue TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS amqp_queues (name TEXT PRIMARY KEY) WITHOUT ROWID
"""

_IN = "IN (SELECT value FROM json_each(?1))"
# The oldest ?2 notes of id ?1: the index on id ends with seq, so this reads n entries.
_DROP = ("DELETE FROM amqp_notes WHERE seq IN"
         " (SELECT seq FROM amqp_notes WHERE id = ?1 ORDER BY seq LIMIT ?2)")
_SCHEDULE = ("INSERT INTO amqp_scheduled (queue, id, due) VALUES (?, ?, ?)"
             " ON CONFLICT (queue, id) DO UPDATE SET due = excluded.due")
_MARK = ("INSERT INTO amqp_purged (queue, at) VALUES (?, ?)"
         " ON CONFLICT (queue) DO UPDATE SET at = max(at, excluded.at)")


def _create_tables(conn: sqlite3.Connection) -> None:
    for statement in filter(None, (s.strip() for s in AMQP_SCHEMA.split(";"))):
        conn.execute(statement)


def _names(values: Collection[str]) -> str:
    return json.dumps(list(dict.fromkeys(values)))


class SQLiteAmqpState(AmqpState):
    """:class:`AmqpState` in the SQLite store ``broker`` (sharing its file and connections)."""

    def __init__(self, broker: SQLiteBroker) -> None:
        self._broker = broker
        #: Whether this object made sure the tables exist (a race of two threads on the
        #: first call only runs the idempotent CREATEs twice).
        self._tables_ready = False

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._tables_ready:
            return self._broker._write(fn)

        def create_first(conn: sqlite3.Connection) -> T:
            _create_tables(conn)
            return fn(conn)

        result = self._broker._write(create_first)
        self._tables_ready = True
        return result

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._tables_ready:
            return self._write(fn)  # once: creates the tables, then reads in that transaction
        return self._broker._read(fn)

    # -- return notes --------------------------------------------------------------------
    def add_notes(self, notes: Sequence[tuple[str, ReturnNote]]) -> None:
        if not notes:
            return
        now = time.time()
        expires = now + NOTE_TTL
        rows = [(message_id, json.dumps(note.as_dict(), separators=(",", ":")), expires)
                for message_id, note in notes]
        ids = _names([message_id for message_id, _ in notes])

        def add(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM amqp_notes WHERE expires <= ?", (now,))
            conn.executemany("INSERT INTO amqp_notes (id, data, expires) VALUES (?, ?, ?)", rows)
            conn.execute(f"UPDATE amqp_notes SET expires = ?2 WHERE id {_IN}", (ids, expires))

        self._write(add)

    def read_notes(self, ids: Collection[str]) -> dict[str, list[ReturnNote]]:
        if not ids:
            return {}
        wanted = _names(ids)

        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute(f"SELECT id, data FROM amqp_notes WHERE id {_IN}"
                                " AND expires > ?2 ORDER BY seq", (wanted, time.time())).fetchall()

        found: dict[str, list[ReturnNote]] = {}
        for message_id, data in self._read(read):
            found.setdefault(message_id, []).append(ReturnNote.from_dict(json.loads(data)))
        return found

    def drop_notes(self, counts: Mapping[str, int]) -> None:
        rows = [(message_id, n) for message_id, n in counts.items() if n > 0]
        if rows:
            self._write(lambda conn: conn.executemany(_DROP, rows))

    # -- the scheduled index -------------------------------------------------------------
    def add_scheduled(self, entries: Sequence[tuple[str, str, float]]) -> None:
        if not entries:
            return
        rows = [(queue, message_id, float(due)) for queue, message_id, due in entries]

        def add(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM amqp_scheduled WHERE due <= ?", (time.time(),))
            conn.executemany(_SCHEDULE, rows)

        self._write(add)

    def scheduled_counts(self, queues: Collection[str], now: float) -> dict[str, int]:
        if not queues:
            return {}
        names = _names(queues)

        def count(conn: sqlite3.Connection) -> dict[str, int]:
            conn.execute(f"DELETE FROM amqp_scheduled WHERE queue {_IN} AND due <= ?2",
                         (names, now))
            rows = conn.execute(f"SELECT queue, count(*) FROM amqp_scheduled WHERE queue {_IN}"
                                " GROUP BY queue", (names,))
            return {queue: int(n) for queue, n in rows}

        return self._write(count)

    def clear_scheduled(self, queues: Collection[str]) -> None:
        if queues:
            names = _names(queues)
            self._write(lambda conn: conn.execute(
                f"DELETE FROM amqp_scheduled WHERE queue {_IN}", (names,)))

    # -- purge marks ---------------------------------------------------------------------
    def mark_purged(self, queues: Collection[str], at: float) -> None:
        rows = [(queue, float(at)) for queue in dict.fromkeys(queues)]
        if rows:
            self._write(lambda conn: conn.executemany(_MARK, rows))

    def purged_at(self, queues: Collection[str]) -> dict[str, float]:
        if not queues:
            return {}
        names = _names(queues)
        rows = self._read(lambda conn: conn.execute(
            f"SELECT queue, at FROM amqp_purged WHERE queue {_IN}", (names,)).fetchall())
        return {queue: float(at) for queue, at in rows}

    # -- queue names ---------------------------------------------------------------------
    def add_queues(self, names: Collection[str]) -> None:
        rows = [(name,) for name in dict.fromkeys(names)]
        if rows:
            self._write(lambda conn: conn.executemany(
                "INSERT OR IGNORE INTO amqp_queues (name) VALUES (?)", rows))

    def queues(self) -> set[str]:
        rows = self._read(lambda conn: conn.execute("SELECT name FROM amqp_queues").fetchall())
        return {name for (name,) in rows}
