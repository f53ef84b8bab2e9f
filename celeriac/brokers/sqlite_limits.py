"""Rate and concurrency limits in the SQLite broker's file.

The SQLite broker's methods for limits (the block at the end of
:class:`celeriac.brokers.sqlite.SQLiteBroker`) each run one of these functions
in one ``BEGIN IMMEDIATE`` transaction, so a read, the sums of
:mod:`celeriac.brokers.limits` and the write are one atomic step for every
process sharing the file. Tables (part of the broker's schema):

``rate_tat``
    task name -> its GCRA theoretical arrival time and its latest grant (unix seconds).
``rate_tickets``
    (task, ticket) -> the time reserved for a deferred message; rows past their
    time by ``TICKET_GRACE`` are deleted when a new ticket is written.
``limit_slots``
    (task, holder) -> slot expiry; expired rows of a task are deleted when a
    slot of that task is taken.
``rate_overrides``
    task name -> a rate limit set at run time (``control rate_limit``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from celeriac.brokers.limits import TICKET_GRACE, decide

LIMITS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_tat (
    task TEXT PRIMARY KEY,
    tat REAL NOT NULL,
    last REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_tickets (
    task TEXT NOT NULL,
    ticket TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (task, ticket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rate_tickets_at ON rate_tickets (at);
CREATE TABLE IF NOT EXISTS limit_slots (
    task TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (task, holder)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_overrides (task TEXT PRIMARY KEY, rate TEXT NOT NULL) WITHOUT ROWID
"""


def take_token(conn: sqlite3.Connection, task: str, rate: float, burst: int, ticket: str,
               now: float) -> float:
    state = conn.execute("SELECT tat, last FROM rate_tat WHERE task = ?", (task,)).fetchone()
    reserved = conn.execute("SELECT at FROM rate_tickets WHERE task = ? AND ticket = ?",
                            (task, ticket)).fetchone()
    tat, last = state if state is not None else (None, None)
    found = decide(tat, last, None if reserved is None else float(reserved[0]), now, rate, burst)
    if found.tat is not None or found.last is not None:
        conn.execute("INSERT INTO rate_tat (task, tat, last) VALUES (?1, ?2, ?3) "
                     "ON CONFLICT (task) DO UPDATE SET tat = ?2, last = ?3",
                     (task, found.tat if found.tat is not None else (tat or now),
                      found.last if found.last is not None else last))
    if found.drop_ticket:
        conn.execute("DELETE FROM rate_tickets WHERE task = ? AND ticket = ?", (task, ticket))
    if found.ticket is not None:
        conn.execute("DELETE FROM rate_tickets WHERE at < ?", (now - TICKET_GRACE,))
        conn.execute("INSERT OR REPLACE INTO rate_tickets (task, ticket, at) VALUES (?, ?, ?)",
                     (task, ticket, found.ticket))
    return found.delay


def acquire_slot(conn: sqlite3.Connection, task: str, limit: int, holder: str, ttl: float,
                 now: float) -> bool:
    conn.execute("DELETE FROM limit_slots WHERE task = ? AND expires <= ?", (task, now))
    held = conn.execute("SELECT count(*), coalesce(sum(holder = ?), 0) FROM limit_slots "
                        "WHERE task = ?", (holder, task)).fetchone()
    if not held[1] and held[0] >= limit:
        return False
    conn.execute("INSERT OR REPLACE INTO limit_slots (task, holder, expires) VALUES (?, ?, ?)",
                 (task, holder, now + ttl))
    return True


def renew_slots(conn: sqlite3.Connection, slots: Sequence[tuple[str, str]], expires: float
                ) -> None:
    conn.executemany("UPDATE limit_slots SET expires = ? WHERE task = ? AND holder = ?",
                     [(expires, task, holder) for task, holder in slots])
