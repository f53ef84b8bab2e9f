"""A result backend in a SQLite file (``sqlite:///results.db``).

One row per task in table ``results``. The file may be the same one the
SQLite broker uses (it owns ``messages``, ``dead_letters`` and ``workers``), so
a single-host deployment needs one file and no server. Connections, WAL mode
and write locking come from :class:`celeriac.sqlitedb.Database`.

The record lives in ``payload`` as JSON text; ``status`` is duplicated in its
own column only so the file can be inspected with plain SQL. ``expires_at`` is
wall-clock time (``time.time()``) because other processes compare against it;
NULL means the row never expires.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from celeriac.backends.base import ResultBackend, ResultRecord
from celeriac.exceptions import BackendError, BrokerError, TimeoutError
from celeriac.sqlitedb import Database, path_from_url

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS results_expires_at ON results (expires_at)
"""

_SELECT_LIVE = ("SELECT payload FROM results "
                "WHERE task_id = ? AND (expires_at IS NULL OR expires_at > ?)")

#: Returned by a wait probe when nothing was committed since the last look.
_UNCHANGED = object()


class SQLiteBackend(ResultBackend):
    """Results in the ``results`` table of a SQLite file shared by all processes."""

    schemes = ("sqlite",)

    def __init__(self, url: str, *, expires: float = 86400.0) -> None:
        super().__init__(url, expires=expires)
        self.path = path_from_url(url)
        self._db = Database(self.path, SCHEMA)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn storage failures into a one-line :class:`BackendError`.

        ``Database`` reports an unopenable file as ``BrokerUnreachable`` because the
        broker shares it; callers of a backend expect ``BackendError``.
        """
        try:
            yield
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite result backend {self.path!r}: {exc}") from exc
        except BrokerError as exc:
            raise BackendError(str(exc)) from exc

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._errors():
            return self._db.read(fn)

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._errors():
            return self._db.write(fn)

    def _expiry(self) -> float | None:
        # expires <= 0 means "keep forever", as Celery treats result_expires=0/None.
        return time.time() + self.expires if self.expires > 0 else None

    def ping(self) -> None:
        """Open the file (creating the table) and read from it."""
        self._read(lambda conn: conn.execute("SELECT 1 FROM results LIMIT 1").fetchall())

    def store(self, record: ResultRecord) -> None:
        self.store_many([record])

    def store_many(self, records: Sequence[ResultRecord]) -> None:
        """All records in one transaction: one fsync-equivalent, and all or nothing."""
        if not records:
            return
        expires_at = self._expiry()
        rows = [(r.task_id, r.status, r.to_json(), expires_at) for r in records]
        self._write(lambda conn: conn.executemany(
            "INSERT OR REPLACE INTO results (task_id, status, payload, expires_at) "
            "VALUES (?, ?, ?, ?)", rows))

    def get(self, task_id: str) -> ResultRecord | None:
        row = self._read(lambda conn: conn.execute(
            _SELECT_LIVE, (task_id, time.time())).fetchone())
        return None if row is None else ResultRecord.from_json(row[0], f"SQLite result backend {self.path!r}")

    def wait(self, task_id: str, timeout: float | None = None,
             interval: float = 0.005) -> ResultRecord:
        """Poll ``PRAGMA data_version`` every ``interval`` and re-read the row only on change.

        ``data_version`` moves when another connection commits, which costs no page
        reads, so waiting stays cheap at a 5 ms period and the result is seen within
        a few milliseconds. Two details keep this correct:

        * The version and the row are read in the same call on the same connection.
          Versions of different connections are unrelated numbers, and under a green
          pool consecutive offloaded calls may run on different threads, hence
          different connections; so the last version is remembered per connection.
        * ``data_version`` ignores the connection's own commits. Under a green pool
          the connection probing here may also have stored the result for another
          greenlet, so ``total_changes`` (which counts exactly those) is part of the
          signature too.
        """
        seen: dict[sqlite3.Connection, tuple[int, int]] = {}

        def probe(conn: sqlite3.Connection) -> object:
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            signature = (version, conn.total_changes)
            if seen.get(conn) == signature:
                return _UNCHANGED
            # Remember the signature *before* reading, so a commit racing with the
            # read changes it and is looked at next time.
            seen[conn] = signature
            row = conn.execute(_SELECT_LIVE, (task_id, time.time())).fetchone()
            return None if row is None else row[0]

        deadline = None if timeout is None else time.monotonic() + timeout
        period = max(interval, 0.001)
        while True:
            payload = self._read(probe)
            if isinstance(payload, str):
                record = ResultRecord.from_json(payload, f"SQLite result backend {self.path!r}")
                if record.ready:
                    return record
            now = time.monotonic()
            if deadline is None:
                time.sleep(period)
            elif now >= deadline:
                raise TimeoutError(f"result of {task_id} not ready after {timeout}s")
            else:
                # Never sleep past the deadline: the last probe happens right at it.
                time.sleep(min(period, deadline - now))

    def forget(self, task_id: str) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM results WHERE task_id = ?", (task_id,)))

    def cleanup(self) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM results WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (time.time(),))
            return cursor.rowcount
        return self._write(delete)

    def close(self) -> None:
        with self._errors():
            self._db.close()
