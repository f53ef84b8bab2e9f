"""A SQLite database file shared by many processes and threads.

Both the SQLite broker and the SQLite result backend use this. It keeps one
connection per (process, thread): connections are never carried across
``fork()`` (the pid is checked on every use) nor shared between threads. The
file runs in WAL mode so readers never wait for the writer, and every write
transaction starts with ``BEGIN IMMEDIATE`` so two writers queue on the lock at
the start instead of failing half-way. Every call runs through
:func:`celeriac.blocking.offload`, so under a green pool, or in a client process
gevent or eventlet has patched, it never blocks the event loop; it then runs on a
few native threads, so a thousand greenlets still share a few connections.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from celeriac.blocking import native_local, native_lock, offload
from celeriac.exceptions import BrokerUnreachable, ConfigurationError

T = TypeVar("T")

#: Seconds a writer waits for the lock before SQLite gives up.
BUSY_TIMEOUT = 30.0


def path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    parsed = urlparse(url)
    if parsed.scheme != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    if parsed.netloc:
        raise ConfigurationError(
            f"sqlite URL {url!r} has a host part; use sqlite:///relative.db or sqlite:////abs.db")
    path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    if not path:
        raise ConfigurationError(f"sqlite URL {url!r} names no file")
    return path


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (stored in the file: for later connections, a no-op).

    When several connections switch a new file at once -- threads of one process
    (serialised by the caller's lock) or several processes -- SQLite refuses all
    but one with "database is locked" *at once*, without its busy handler (waiting
    could deadlock). That one is converting the file, so ask again: the next try
    waits in the busy handler until the conversion is done, then finds WAL.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise


def _closing_cursor(result: T) -> T:
    """Close a cursor that ``fn`` returned, here, on the connection's own thread.

    Offloaded calls run on a pool thread but return to the caller's thread; a live
    cursor freed there would reset its cached statement while the pool thread
    binds the same statement for the next call (SQLite: "API misuse").
    """
    if isinstance(result, sqlite3.Cursor):
        result.close()
    return result


class Database:
    """Connections to one SQLite file, one per process and thread."""

    def __init__(self, path: str, schema: str) -> None:
        self.path = path
        self._schema = schema
        self._local = native_local()
        self._schema_ready_pid: int | None = None
        # A lock of the OS: _connect() runs on the native threads of a hub's pool.
        self._lock = native_lock()

    def _connect(self) -> sqlite3.Connection:
        parent = Path(self.path).resolve().parent
        if not parent.is_dir():
            raise BrokerUnreachable(f"cannot open SQLite database {self.path!r}: "
                                    f"directory {str(parent)!r} does not exist")
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            with self._lock:
                _enable_wal(conn)
        except sqlite3.Error as exc:
            raise BrokerUnreachable(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        with self._lock:
            if self._schema_ready_pid != os.getpid():
                conn.execute("BEGIN IMMEDIATE")
                for statement in filter(None, (s.strip() for s in self._schema.split(";"))):
                    conn.execute(statement)
                conn.execute("COMMIT")
                self._schema_ready_pid = os.getpid()
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection in this process, opened on first use."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn = self._connect()
            local.guard = native_lock()
            local.pid = os.getpid()
        conn: sqlite3.Connection = local.conn
        return conn

    def _guard(self) -> Any:
        """The lock of this thread's connection: every use of a connection holds it, so
        a connection can never be used by two threads at once, whatever hands it out."""
        self.connection()
        return self._local.guard

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT can leave the transaction open, holding the write
            # lock for every process; and after errors such as a full disk SQLite
            # has already rolled back, so an unconditional ROLLBACK would raise
            # and hide the real error.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside one ``BEGIN IMMEDIATE`` transaction, off the event loop."""
        def run() -> T:
            with self._guard(), self._transaction() as conn:
                return _closing_cursor(fn(conn))
        return offload(run)

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` outside an explicit transaction (a consistent WAL snapshot per statement)."""
        def run() -> T:
            with self._guard():
                return _closing_cursor(fn(self.connection()))
        return offload(run)

    def data_version(self) -> int:
        """A number that changes whenever another connection commits (cheap: no I/O of pages)."""
        return self.read(lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]))

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local = native_local()
