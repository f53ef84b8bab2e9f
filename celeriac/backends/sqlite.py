"""A result backend in a SQLite file (``sqlite:///results.db``).

One row per task in table ``results``. The file may be the same one the
SQLite broker uses (it owns ``messages``, ``dead_letters`` and ``workers``), so
a single-host deployment needs one file and no server. Connections, WAL mode
and write locking come from :class:`celeriac.sqlitedb.Database`.

The record lives in ``payload`` as JSON text; ``status`` is duplicated in its
own column only so the file can be inspected with plain SQL. ``expires_at`` is
wall-clock time (``time.time()``) because other processes compare against it;
NULL means the row never expires. ``name`` and ``stored_at`` serve the task search,
with two indexes on them that only a backend with ``result_index`` on creates (see
:data:`_SEARCH_INDEXES`).

``result_groups`` holds saved groups (``GroupResult.save()``), and ``chords`` (one row
per chord: its size, which member fired, whether the body was sent, the body's claim
token) with ``chord_members`` (one row per member that finished) the chord join state.
A join is one ``BEGIN IMMEDIATE`` transaction, so joins from every process are
serialised by the file's write lock: see :meth:`SQLiteBackend.chord_join`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from celeriac.backends.base import ResultBackend, ResultRecord
from celeriac.backends.search import PREFIX_SCAN, TaskSummary, check_page
from celeriac.exceptions import BackendError, BrokerError, TimeoutError
from celeriac.sqlitedb import Database, path_from_url
from celeriac.states import READY_STATES

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    expires_at REAL,
    name TEXT,
    stored_at REAL
);
CREATE TABLE IF NOT EXISTS result_groups (
    group_id TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS chords (
    group_id TEXT PRIMARY KEY,
    size INTEGER,
    fired INTEGER,
    done INTEGER NOT NULL DEFAULT 0,
    body_token TEXT,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS chord_members (
    group_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    PRIMARY KEY (group_id, idx)
)
"""

_READY_SQL = ", ".join(f"'{state}'" for state in sorted(READY_STATES))
#: Store a record: insert, or replace the stored one unless that one is ready (and
#: live) and the new one is not (see ResultBackend.store).
_UPSERT = (
    "INSERT INTO results (task_id, status, payload, expires_at, name, stored_at) "
    "VALUES (?1, ?2, ?3, ?4, ?6, ?5) "
    "ON CONFLICT (task_id) DO UPDATE SET status = excluded.status, payload = excluded.payload, "
    "expires_at = excluded.expires_at, name = excluded.name, stored_at = excluded.stored_at "
    f"WHERE excluded.status IN ({_READY_SQL}) OR results.status NOT IN ({_READY_SQL}) "
    "OR (results.expires_at IS NOT NULL AND results.expires_at <= ?5)")

_SELECT_LIVE = ("SELECT payload FROM results "
                "WHERE task_id = ? AND (expires_at IS NULL OR expires_at > ?)")

#: The indexes the table needs either way: ``results_recent`` replaces the index on
#: ``expires_at`` alone, one index less on every store: :meth:`SQLiteBackend.cleanup`,
#: which is rare, reads it, and so does a search with no filter.
_TABLE_INDEXES = (
    "DROP INDEX IF EXISTS results_expires_at",
    "CREATE INDEX IF NOT EXISTS results_recent ON results (stored_at, expires_at)",
)
#: The search index (:meth:`SQLiteBackend.search`): each filter's rows newest first, with
#: ``expires_at`` in the index so counting live rows reads no table row. A name and a
#: state together walk the name's index and test the state there. Not created when
#: ``result_index`` is off (each costs every store an index update); a file that has
#: them keeps them, as another process may search it.
_SEARCH_INDEXES = (
    "CREATE INDEX IF NOT EXISTS results_by_state ON results (status, stored_at, expires_at)",
    "CREATE INDEX IF NOT EXISTS results_by_name ON results (name, stored_at, status, expires_at)",
)


def _add_search_index(conn: sqlite3.Connection, expires: float, index: bool = True) -> None:
    """Give a ``results`` table the search columns and, with ``index``, the search
    indexes. A file written by an older celeriac lacks the columns: its rows get their
    name from the record and a store time from their expiry (``expires_at - expires``),
    once."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    if "stored_at" not in columns:
        conn.execute("ALTER TABLE results ADD COLUMN name TEXT")
        conn.execute("ALTER TABLE results ADD COLUMN stored_at REAL")
        conn.execute("UPDATE results SET name = json_extract(payload, '$.name'), "
                     "stored_at = coalesce(expires_at - ?, 0)", (max(expires, 0.0),))
    for statement in _TABLE_INDEXES + (_SEARCH_INDEXES if index else ()):
        conn.execute(statement)


def search_sql(task_id_prefix: str | None, name: str | None, state: str | None,
               now: float, expires: float) -> tuple[str, str, list[Any]]:
    """The count and page statements of a search, and their parameters (the page's
    ``LIMIT`` and ``OFFSET`` follow). Each names its index: without statistics the
    planner would rather sort every live row. ``stored_at > now - expires`` bounds the
    index range to rows that can be live, so expired rows that no :meth:`cleanup
    <SQLiteBackend.cleanup>` deleted yet cost nothing (as the Redis index's score floor:
    a row stored under a longer ``result_expires`` elsewhere is listed for this one's)."""
    where = ["(expires_at IS NULL OR expires_at > ?)"]
    params: list[Any] = [now]
    index = "results_recent"
    if state is not None:
        where.append("status = ?")
        params.append(state)
        index = "results_by_state"
    if name is not None:
        where.append("name = ?")
        params.append(name)
        index = "results_by_name"
    if expires > 0:
        where.append("stored_at > ?")
        params.append(now - expires)
    source = f"results INDEXED BY {index}"
    if task_id_prefix is not None:  # few rows: the primary key finds them, then a sort
        where.append("task_id IN (SELECT task_id FROM results WHERE task_id >= ? "
                     "AND task_id < ? ORDER BY task_id LIMIT ?)")
        params += [task_id_prefix, task_id_prefix + "\U0010ffff", PREFIX_SCAN]
        source = "results"
    condition = " AND ".join(where)
    return (f"SELECT count(*) FROM {source} WHERE {condition}",
            "SELECT task_id, name, status, json_extract(payload, '$.date_done'), "
            "json_extract(payload, '$.queue'), json_extract(payload, '$.worker') "
            f"FROM {source} WHERE {condition} ORDER BY stored_at DESC LIMIT ? OFFSET ?", params)


#: Returned by a wait probe when nothing was committed since the last look.
_UNCHANGED = object()


class SQLiteBackend(ResultBackend):
    """Results in the ``results`` table of a SQLite file shared by all processes."""

    schemes = ("sqlite",)

    def __init__(self, url: str, *, expires: float = 86400.0, index: bool = True) -> None:
        super().__init__(url, expires=expires, index=index)
        self.path = path_from_url(url)
        self._db = Database(self.path, SCHEMA)
        #: Whether this object made sure the file has the search columns and indexes.
        self._indexed = False

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
            if not self._indexed:
                self._db.write(lambda conn: _add_search_index(conn, self.expires, self.index))
                self._indexed = True
            return self._db.read(fn)

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._errors():
            if not self._indexed:
                self._db.write(lambda conn: _add_search_index(conn, self.expires, self.index))
                self._indexed = True
            return self._db.write(fn)

    def _expiry(self, expires: float | None = None) -> float | None:
        # expires <= 0 means "keep forever", as Celery treats result_expires=0/None.
        seconds = self._ttl(expires)
        return time.time() + seconds if seconds > 0 else None

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
        rows = [(r.task_id, r.status, r.to_json(), expires_at, r.name) for r in records]
        # A ready record is not replaced by an unready one (ResultBackend.store), unless
        # it has expired: one upsert per row decides, inside the transaction.
        now = time.time()
        self._write(lambda conn: conn.executemany(
            _UPSERT, [(task_id, status, payload, expires, now, name)
                      for task_id, status, payload, expires, name in rows]))

    def get(self, task_id: str) -> ResultRecord | None:
        row = self._read(lambda conn: conn.execute(
            _SELECT_LIVE, (task_id, time.time())).fetchone())
        return None if row is None else ResultRecord.from_json(row[0], f"SQLite result backend {self.path!r}")

    def get_many(self, task_ids: Sequence[str]) -> list[ResultRecord | None]:
        """One read per 500 ids (under SQLite's limit of bound parameters per statement)."""
        where = f"SQLite result backend {self.path!r}"

        def read(conn: sqlite3.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            now = time.time()
            for start in range(0, len(task_ids), 500):
                chunk = list(task_ids[start:start + 500])
                marks = ",".join("?" * len(chunk))
                found.update(conn.execute(
                    f"SELECT task_id, payload FROM results WHERE task_id IN ({marks}) "
                    "AND (expires_at IS NULL OR expires_at > ?)", [*chunk, now]).fetchall())
            return found

        found = self._read(read) if task_ids else {}
        return [None if task_id not in found else ResultRecord.from_json(found[task_id], where)
                for task_id in task_ids]

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

    def search(self, *, task_id_prefix: str | None = None, name: str | None = None,
               state: str | None = None, offset: int = 0,
               limit: int = 50) -> tuple[list[TaskSummary], int]:
        """Two statements in one read: the count, and the page (``LIMIT``/``OFFSET`` on
        the index of the filter, newest first), its few fields read with
        ``json_extract`` so that a page never decodes large results in Python."""
        self._check_index()
        check_page(offset, limit)
        count_sql, page_sql, params = search_sql(task_id_prefix, name, state, time.time(),
                                                 self.expires)

        def read(conn: sqlite3.Connection) -> tuple[list[Any], int]:
            (total,) = conn.execute(count_sql, params).fetchone()
            rows = conn.execute(page_sql, [*params, limit, offset]).fetchall()
            return rows, int(total)

        rows, total = self._read(read)
        return [TaskSummary(task_id=task_id, task=task, state=status, date_done=done,
                            queue=queue, worker=worker)
                for task_id, task, status, done, queue, worker in rows], total

    def forget(self, task_id: str) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM results WHERE task_id = ?", (task_id,)))

    def cleanup(self) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            now = time.time()
            conn.execute("DELETE FROM result_groups WHERE expires_at IS NOT NULL AND expires_at <= ?",
                         (now,))
            conn.execute("DELETE FROM chord_members WHERE group_id IN (SELECT group_id FROM chords "
                         "WHERE expires_at IS NOT NULL AND expires_at <= ?)", (now,))
            conn.execute("DELETE FROM chords WHERE expires_at IS NOT NULL AND expires_at <= ?",
                         (now,))
            cursor = conn.execute(
                "DELETE FROM results WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            return cursor.rowcount
        return self._write(delete)

    # -- saved groups ----------------------------------------------------------------------
    def save_group(self, group_id: str, members: Any) -> None:
        row = (group_id, json.dumps(members), self._expiry())
        self._write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO result_groups (group_id, payload, expires_at) VALUES (?, ?, ?)",
            row))

    def restore_group(self, group_id: str) -> Any:
        row = self._read(lambda conn: conn.execute(
            "SELECT payload FROM result_groups "
            "WHERE group_id = ? AND (expires_at IS NULL OR expires_at > ?)",
            (group_id, time.time())).fetchone())
        return None if row is None else json.loads(row[0])

    def delete_group(self, group_id: str) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM result_groups WHERE group_id = ?", (group_id,)))

    # -- chords ----------------------------------------------------------------------------
    @staticmethod
    def _drop_expired_chord(conn: sqlite3.Connection, group_id: str) -> None:
        """Forget ``group_id``'s state if it expired (inside the caller's transaction), so
        an expired chord is the same as an unknown one whether or not cleanup ran."""
        cursor = conn.execute("DELETE FROM chords WHERE group_id = ? AND expires_at IS NOT NULL "
                              "AND expires_at <= ?", (group_id, time.time()))
        if cursor.rowcount:
            conn.execute("DELETE FROM chord_members WHERE group_id = ?", (group_id,))

    def chord_join(self, group_id: str, index: int, result_id: str, size: int, *,
                   expires: float | None = None) -> bool:
        """One write transaction: the file's write lock orders joins from every process,
        and the ``UPDATE ... WHERE fired IS NULL`` row count decides who fires."""
        self._check_member(group_id, index, size)
        expires_at = self._expiry(expires)

        def join(conn: sqlite3.Connection) -> bool:
            self._drop_expired_chord(conn, group_id)
            conn.execute(
                "INSERT INTO chords (group_id, size, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (group_id) DO UPDATE SET size = coalesce(size, excluded.size), "
                "expires_at = excluded.expires_at", (group_id, size, expires_at))
            recorded, fired, done = conn.execute(
                "SELECT size, fired, done FROM chords WHERE group_id = ?", (group_id,)).fetchone()
            if recorded != size:
                raise self._size_mismatch(group_id, size, recorded)  # rolls the transaction back
            conn.execute("INSERT OR IGNORE INTO chord_members (group_id, idx, result_id) "
                         "VALUES (?, ?, ?)", (group_id, index, result_id))
            if fired is None:
                (count,) = conn.execute("SELECT count(*) FROM chord_members WHERE group_id = ?",
                                        (group_id,)).fetchone()
                if count < size:
                    return False
                return conn.execute("UPDATE chords SET fired = ? WHERE group_id = ? AND fired IS NULL",
                                    (index, group_id)).rowcount == 1
            return bool(fired == index and not done)

        return self._write(join)

    def chord_members(self, group_id: str) -> list[str] | None:
        def members(conn: sqlite3.Connection) -> list[str] | None:
            row = conn.execute("SELECT size FROM chords WHERE group_id = ? AND size IS NOT NULL "
                               "AND (expires_at IS NULL OR expires_at > ?)",
                               (group_id, time.time())).fetchone()
            if row is None:
                return None
            return [r[0] for r in conn.execute(
                "SELECT result_id FROM chord_members WHERE group_id = ? ORDER BY idx", (group_id,))]
        return self._read(members)

    def chord_done(self, group_id: str) -> None:
        self._write(lambda conn: conn.execute(
            "UPDATE chords SET done = 1 WHERE group_id = ?", (group_id,)))

    def chord_forget(self, group_id: str) -> None:
        def forget(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM chord_members WHERE group_id = ?", (group_id,))
            conn.execute("DELETE FROM chords WHERE group_id = ?", (group_id,))
        self._write(forget)

    def chord_claim_body(self, group_id: str, token: str, *,
                         expires: float | None = None) -> bool:
        expires_at = self._expiry(expires)

        def claim(conn: sqlite3.Connection) -> bool:
            self._drop_expired_chord(conn, group_id)
            conn.execute("INSERT OR IGNORE INTO chords (group_id, expires_at) VALUES (?, ?)",
                         (group_id, expires_at))
            conn.execute("UPDATE chords SET body_token = ? WHERE group_id = ? AND body_token IS NULL",
                         (token, group_id))
            (owner,) = conn.execute("SELECT body_token FROM chords WHERE group_id = ?",
                                    (group_id,)).fetchone()
            return bool(owner == token)

        return self._write(claim)

    def close(self) -> None:
        with self._errors():
            self._db.close()
