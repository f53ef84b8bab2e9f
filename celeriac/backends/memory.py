"""An in-process result backend (``memory://``).

It exists for tests, for ``task_always_eager``-style runs and for a worker
with a thread or green pool whose callers live in the same process. Nothing
leaves the process, and every instance has its own store: two
``MemoryBackend("memory://")`` objects do not see each other's results, which
keeps tests independent of each other.

Records are kept as JSON text, not as objects. That costs an encode per store
and a decode per get, but it makes this backend behave like the ones that
cross process boundaries: a result that is not JSON fails here too (instead of
only in production), and a caller mutating a record it stored or fetched
cannot change what other callers see.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from celeriac.backends.base import ResultBackend, ResultRecord
from celeriac.backends.search import TaskSummary, check_page, summary_of
from celeriac.exceptions import TimeoutError
from celeriac.states import READY_STATES


class _Entry(NamedTuple):
    payload: str
    #: ``time.monotonic()`` after which the record is gone; None = never.
    expires_at: float | None
    #: A task record's status and name (a saved group's entry has none).
    status: str = ""
    name: str | None = None
    #: ``time.time()`` of the store: the search order.
    stored_at: float = 0.0


@dataclass
class _Chord:
    """One chord's join state (see :meth:`ResultBackend.chord_join`)."""

    #: None while only a body claim created the state.
    size: int | None = None
    members: dict[int, str] = field(default_factory=dict)
    fired: int | None = None
    done: bool = False
    body_token: str | None = None
    expires_at: float | None = None


class MemoryBackend(ResultBackend):
    """Results in a dict guarded by one lock; ``wait()`` sleeps on a condition.

    The condition is notified on every store, so a waiter wakes as soon as its
    result arrives instead of after the next poll interval, and burns no CPU
    while nothing happens.
    """

    schemes = ("memory",)

    def __init__(self, url: str = "memory://", *, expires: float = 86400.0,
                 index: bool = True) -> None:
        super().__init__(url, expires=expires, index=index)
        self._records: dict[str, _Entry] = {}
        self._groups: dict[str, _Entry] = {}
        self._chords: dict[str, _Chord] = {}
        self._changed = threading.Condition(threading.Lock())

    def _expiry(self, expires: float | None = None) -> float | None:
        # expires <= 0 means "keep forever", as Celery treats result_expires=0/None.
        seconds = self._ttl(expires)
        return time.monotonic() + seconds if seconds > 0 else None

    def _live_payload(self, task_id: str, now: float) -> str | None:
        """The payload of ``task_id`` unless absent or expired; caller holds the lock."""
        entry = self._records.get(task_id)
        if entry is None or (entry.expires_at is not None and entry.expires_at <= now):
            return None
        return entry.payload

    def store(self, record: ResultRecord) -> None:
        self.store_many([record])

    def store_many(self, records: Sequence[ResultRecord]) -> None:
        # Encode everything first so a bad record stores nothing (like a rolled-back
        # transaction in the SQL backend).
        encoded = [(record.task_id, record.status, record.name, record.to_json())
                   for record in records]
        expires_at = self._expiry()
        stored_at = time.time()
        with self._changed:
            now = time.monotonic()
            for task_id, status, name, payload in encoded:
                if status not in READY_STATES:  # never over a ready record (see ResultBackend.store)
                    current = self._records.get(task_id)
                    if (current is not None and current.status in READY_STATES
                            and (current.expires_at is None or current.expires_at > now)):
                        continue
                # Popped first, so the dict's order stays the order of the stores.
                self._records.pop(task_id, None)
                self._records[task_id] = _Entry(payload, expires_at, status, name, stored_at)
            self._changed.notify_all()

    def get(self, task_id: str) -> ResultRecord | None:
        with self._changed:
            payload = self._live_payload(task_id, time.monotonic())
        return None if payload is None else ResultRecord.from_json(payload, "memory backend")

    def wait(self, task_id: str, timeout: float | None = None,
             interval: float = 0.005) -> ResultRecord:
        """Block on the condition until a ready record shows up (``interval`` is unused)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.monotonic()
                payload = self._live_payload(task_id, now)
                if payload is not None:
                    record = ResultRecord.from_json(payload, "memory backend")
                    if record.ready:
                        return record
                if deadline is None:
                    self._changed.wait()
                elif now >= deadline:
                    raise TimeoutError(f"result of {task_id} not ready after {timeout}s")
                else:
                    self._changed.wait(deadline - now)

    def forget(self, task_id: str) -> None:
        with self._changed:
            self._records.pop(task_id, None)

    def search(self, *, task_id_prefix: str | None = None, name: str | None = None,
               state: str | None = None, offset: int = 0,
               limit: int = 50) -> tuple[list[TaskSummary], int]:
        """A filter over the dict, newest first: this backend lives in one process and
        holds what its tests store, so it keeps no separate index (and refuses, as the
        others, when ``index`` is off, so code tested on it behaves as on them)."""
        self._check_index()
        check_page(offset, limit)
        with self._changed:
            now = time.monotonic()
            found = [entry for task_id, entry in reversed(self._records.items())
                     if (entry.expires_at is None or entry.expires_at > now)
                     and (name is None or entry.name == name)
                     and (state is None or entry.status == state)
                     and (task_id_prefix is None or task_id.startswith(task_id_prefix))]
        page = found[offset:offset + limit]
        return [summary_of(ResultRecord.from_json(e.payload, "memory backend")) for e in page], \
            len(found)

    def cleanup(self) -> int:
        now = time.monotonic()
        with self._changed:
            expired = [task_id for task_id, entry in self._records.items()
                       if entry.expires_at is not None and entry.expires_at <= now]
            for task_id in expired:
                del self._records[task_id]
            for store in (self._groups, self._chords):
                for key in [k for k, v in store.items()
                            if v.expires_at is not None and v.expires_at <= now]:
                    del store[key]
        return len(expired)

    # -- saved groups ----------------------------------------------------------------------
    def save_group(self, group_id: str, members: Any) -> None:
        payload = json.dumps(members)  # a copy, and refused here if it is not JSON
        with self._changed:
            self._groups[group_id] = _Entry(payload, self._expiry())

    def restore_group(self, group_id: str) -> Any:
        now = time.monotonic()
        with self._changed:
            entry = self._groups.get(group_id)
            if entry is None or (entry.expires_at is not None and entry.expires_at <= now):
                return None
        return json.loads(entry.payload)

    def delete_group(self, group_id: str) -> None:
        with self._changed:
            self._groups.pop(group_id, None)

    # -- chords ----------------------------------------------------------------------------
    def _chord(self, group_id: str) -> _Chord | None:
        """The live state of ``group_id``; caller holds the lock."""
        chord = self._chords.get(group_id)
        if chord is not None and chord.expires_at is not None and chord.expires_at <= time.monotonic():
            del self._chords[group_id]
            return None
        return chord

    def chord_join(self, group_id: str, index: int, result_id: str, size: int, *,
                   expires: float | None = None) -> bool:
        self._check_member(group_id, index, size)
        with self._changed:
            chord = self._chord(group_id) or self._chords.setdefault(group_id, _Chord())
            if chord.size is None:
                chord.size = size
            elif chord.size != size:
                raise self._size_mismatch(group_id, size, chord.size)
            chord.members.setdefault(index, result_id)
            chord.expires_at = self._expiry(expires)
            if chord.fired is None and len(chord.members) == size:
                chord.fired = index
                return True
            return chord.fired == index and not chord.done

    def chord_members(self, group_id: str) -> list[str] | None:
        with self._changed:
            chord = self._chord(group_id)
            if chord is None or chord.size is None:
                return None
            return [chord.members[i] for i in sorted(chord.members)]

    def chord_done(self, group_id: str) -> None:
        with self._changed:
            chord = self._chord(group_id)
            if chord is not None:
                chord.done = True

    def chord_forget(self, group_id: str) -> None:
        with self._changed:
            self._chords.pop(group_id, None)

    def chord_claim_body(self, group_id: str, token: str, *,
                         expires: float | None = None) -> bool:
        with self._changed:
            chord = self._chord(group_id)
            if chord is None:
                chord = self._chords[group_id] = _Chord(expires_at=self._expiry(expires))
            if chord.body_token is None:
                chord.body_token = token
            return chord.body_token == token
