"""Revocations, remote-control commands and reply boxes of the SQLite broker.

A mixin of :class:`celeriac.brokers.sqlite.SQLiteBroker`, kept apart so that
``sqlite.py`` stays about messages. Its tables are part of the broker's schema
(:data:`CONTROL_SCHEMA`) and live in the same file:

``revocations``
    one row per revoked task id and call, ``seq`` from ``AUTOINCREMENT`` (never
    reused, so ``revocations(after=seq)`` is a stable cursor). A worker polls it
    twice a second with one read-only ``SELECT`` on the primary key that skips
    expired rows; ``revoke`` deletes the expired ones (index on ``expires``) in
    its own transaction, so polling never takes the write lock.
``commands``
    the broadcast stream, trimmed to the newest ``commands_kept`` like
    ``events`` (one range delete each time the seq crosses a tenth of the cap).
    The newest seq ever handed out is in ``sqlite_sequence``, which trimming
    never touches: that is ``command_cursor()``.
``replies``
    one row per reply, with the box's expiry time; each reply moves the expiry of
    its whole box, expired rows are deleted by later ``reply`` and ``replies``
    calls. A waiting ``replies()`` looks with a read (one index probe) every
    ``poll_interval`` and only takes the write lock when there is something to
    collect.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.brokers.base import ControlCommand, Revocation

T = TypeVar("T")

CONTROL_SCHEMA = """
CREATE TABLE IF NOT EXISTS revocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    expires REAL NOT NULL,
    terminate INTEGER NOT NULL,
    signal TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS revocations_expires ON revocations (expires);
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY,
    box TEXT NOT NULL,
    body TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_box ON replies (box, id);
CREATE INDEX IF NOT EXISTS replies_expires ON replies (expires)
"""

_REVOCATIONS = """
    SELECT seq, task_id, expires, terminate, signal FROM revocations
    WHERE seq > ?1 AND expires > ?2 ORDER BY seq LIMIT ?3
"""
# Rows past the cap that the last trim left count as gone already.
_COMMANDS = """
    SELECT seq, time, body FROM commands
    WHERE seq > ?1 AND seq > (SELECT coalesce(max(seq), 0) FROM commands) - ?2
    ORDER BY seq LIMIT ?3
"""
_COMMAND_CURSOR = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'commands'), 0)"
_ANY_REPLY = "SELECT 1 FROM replies WHERE box = ?1 AND expires > ?2 LIMIT 1"
# The oldest ?3 live replies of box ?1 (?3 = -1: all); RETURNING has no order, hence id.
_TAKE_REPLIES = """
    DELETE FROM replies WHERE id IN (
        SELECT id FROM replies WHERE box = ?1 AND expires > ?2 ORDER BY id LIMIT ?3)
    RETURNING id, body
"""


class SQLiteControl:
    """Revoke and remote-control storage on the SQLite broker's database."""

    if TYPE_CHECKING:
        poll_interval: float
        commands_kept: int

        def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    # -- revoke ----------------------------------------------------------------------
    def revoke(self, revocations: Sequence[Revocation]) -> None:
        if not revocations:
            return
        rows = [(r.task_id, float(r.expires), int(r.terminate), r.signal) for r in revocations]

        def insert(conn: sqlite3.Connection) -> None:
            # executemany in order: AUTOINCREMENT hands out increasing seqs.
            conn.executemany("INSERT INTO revocations (task_id, expires, terminate, signal)"
                             " VALUES (?, ?, ?, ?)", rows)
            conn.execute("DELETE FROM revocations WHERE expires <= ?", (time.time(),))

        self._write(insert)

    def revocations(self, after: int = 0, limit: int = 1000) -> list[Revocation]:
        rows = self._read(lambda conn: conn.execute(
            _REVOCATIONS, (after, time.time(), max(limit, 0))).fetchall())
        return [Revocation(seq=seq, task_id=task_id, expires=expires, terminate=bool(terminate),
                           signal=signal) for seq, task_id, expires, terminate, signal in rows]

    # -- remote control ----------------------------------------------------------------
    def broadcast(self, body: dict[str, Any]) -> int:
        # default=str: like events, one odd value does not make the command fail.
        row = (time.time(), json.dumps(body, default=str))
        kept = self.commands_kept
        step = max(kept // 10, 1)

        def insert(conn: sqlite3.Connection) -> int:
            seq = int(conn.execute("INSERT INTO commands (time, body) VALUES (?, ?)",
                                   row).lastrowid or 0)
            if (seq - 1) // step != seq // step:
                conn.execute("DELETE FROM commands WHERE seq <= ?", (seq - kept,))
            return seq

        return self._write(insert)

    def commands(self, after: int, limit: int = 100) -> list[ControlCommand]:
        rows = self._read(lambda conn: conn.execute(
            _COMMANDS, (after, self.commands_kept, max(limit, 0))).fetchall())
        return [ControlCommand(seq=seq, time=when, body=json.loads(body))
                for seq, when, body in rows]

    def command_cursor(self) -> int:
        return int(self._read(lambda conn: conn.execute(_COMMAND_CURSOR).fetchone()[0]))

    def reply(self, reply_to: str, body: dict[str, Any], ttl: float = 60.0) -> None:
        payload = json.dumps(body, default=str)

        def insert(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute("DELETE FROM replies WHERE expires <= ?", (now,))
            conn.execute("INSERT INTO replies (box, body, expires) VALUES (?, ?, ?)",
                         (reply_to, payload, now + ttl))
            conn.execute("UPDATE replies SET expires = ?1 WHERE box = ?2", (now + ttl, reply_to))

        self._write(insert)

    def _take_replies(self, reply_to: str, limit: int) -> list[dict[str, Any]]:
        """Remove and return the oldest ``limit`` replies of a box (-1: all of them)."""
        def take(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            now = time.time()
            rows = conn.execute(_TAKE_REPLIES, (reply_to, now, limit)).fetchall()
            conn.execute("DELETE FROM replies WHERE expires <= ?", (now,))
            return rows

        return [json.loads(body) for _, body in sorted(self._write(take))]

    def replies(self, reply_to: str, *, timeout: float,
                count: int | None = None) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while True:
            want = -1 if count is None else max(count - len(got), 0)
            # A look costs one index probe and no lock; taking is a write transaction.
            if want != 0 and self._read(lambda conn: conn.execute(
                    _ANY_REPLY, (reply_to, time.time())).fetchone()) is not None:
                got += self._take_replies(reply_to, want)
            remaining = deadline - time.monotonic()
            if (count is not None and len(got) >= count) or remaining <= 0:
                return got
            time.sleep(min(self.poll_interval, remaining))
