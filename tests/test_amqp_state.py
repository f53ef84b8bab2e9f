"""The RabbitMQ broker's state-store records (``celeriac.brokers.amqp.state``), on both stores.

Every test runs on a SQLite file and on the session's redis-server (a key prefix of the
test's own), through :func:`state_for` on a broker built from the URL, as the AMQP broker
builds it. No RabbitMQ is needed: these records never touch it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from celeriac.brokers import Broker, broker_from_url
from celeriac.brokers.amqp.state import NOTE_TTL, AmqpState, ReturnNote, state_for
from celeriac.exceptions import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[1]

CHARGED = ReturnNote(charge=1)
SUSPECT = ReturnNote(suspect=4)
DEAD = ReturnNote(settle="dead", reason="killed at its hard time limit")
LATER = ReturnNote(settle="requeue", delay=2.5)


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("redis_url"))  # asked for here: sqlite starts no server


@contextmanager
def _open(url: str) -> Iterator[tuple[Broker, AmqpState]]:
    """A store broker from ``url`` and the AMQP state on it, as the AMQP broker builds them."""
    store = broker_from_url(url)
    try:
        yield store, state_for(store)
    finally:
        store.close()


@pytest.fixture
def state(url: str) -> Iterator[AmqpState]:
    with _open(url) as (_, found):
        yield found


def new_id() -> str:
    return uuid.uuid4().hex


# -- return notes ---------------------------------------------------------------------------


def test_notes_are_read_oldest_first_with_every_field(state: AmqpState) -> None:
    message = new_id()
    state.add_notes([(message, CHARGED), (message, SUSPECT)])
    state.add_notes([(message, DEAD), (message, LATER)])
    assert state.read_notes([message]) == {message: [CHARGED, SUSPECT, DEAD, LATER]}
    assert state.read_notes([message]) == {message: [CHARGED, SUSPECT, DEAD, LATER]}  # not consumed


def test_notes_of_several_ids_in_one_call_and_ids_without_notes_left_out(state: AmqpState) -> None:
    a, b, none = new_id(), new_id(), new_id()
    state.add_notes([(a, CHARGED), (b, SUSPECT), (a, DEAD)])
    assert state.read_notes([a, none, b, a]) == {a: [CHARGED, DEAD], b: [SUSPECT]}
    assert state.read_notes([none]) == {}
    assert state.read_notes([]) == {}


def test_drop_takes_exactly_the_oldest_n_and_a_later_note_stays(state: AmqpState) -> None:
    a, b = new_id(), new_id()
    state.add_notes([(a, CHARGED), (a, SUSPECT), (b, CHARGED), (b, DEAD)])
    read = state.read_notes([a, b])
    state.add_notes([(a, LATER)])  # a late writer (the reaper) between the read and the drop
    state.drop_notes({message: len(notes) for message, notes in read.items()})
    assert state.read_notes([a, b]) == {a: [LATER]}
    state.drop_notes({a: 5, new_id(): 1})  # more than there are; an id with none
    assert state.read_notes([a]) == {}
    state.add_notes([(a, CHARGED)])  # a dropped id takes notes again
    assert state.read_notes([a]) == {a: [CHARGED]}


def test_drop_of_part_of_the_notes(state: AmqpState) -> None:
    message = new_id()
    state.add_notes([(message, CHARGED), (message, SUSPECT), (message, DEAD)])
    state.drop_notes({message: 2})
    assert state.read_notes([message]) == {message: [DEAD]}
    state.drop_notes({message: 0})
    assert state.read_notes([message]) == {message: [DEAD]}


def test_notes_written_by_many_threads_are_all_kept(state: AmqpState) -> None:
    message = new_id()

    def write(n: int) -> None:
        for _ in range(10):
            state.add_notes([(message, ReturnNote(charge=1, suspect=n))])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    notes = state.read_notes([message])[message]
    assert sorted(note.suspect for note in notes) == sorted(list(range(1, 5)) * 10)
    for n in range(1, 5):  # each thread's notes in its own order (all equal here: kept whole)
        assert [note for note in notes if note.suspect == n] == [ReturnNote(1, n)] * 10


# -- the scheduled index --------------------------------------------------------------------


def test_scheduled_entries_are_counted_after_now_and_deleted_once_due(state: AmqpState) -> None:
    q1, q2, q3 = new_id(), new_id(), new_id()
    base = time.time()
    state.add_scheduled([(q1, "a", base + 100), (q1, "b", base + 200), (q2, "c", base + 150)])
    assert state.scheduled_counts([q1, q2, q3], base + 50) == {q1: 2, q2: 1}
    # Due by now (c exactly at it) is not scheduled any more.
    assert state.scheduled_counts([q1, q2, q3], base + 150) == {q1: 1}
    # ... and was deleted on the way: an earlier "now" does not bring it back.
    assert state.scheduled_counts([q1, q2], base + 50) == {q1: 1}
    assert state.scheduled_counts([], base) == {}


def test_a_message_scheduled_again_counts_once_with_its_new_due(state: AmqpState) -> None:
    queue = new_id()
    base = time.time()
    state.add_scheduled([(queue, "m", base + 10)])
    state.add_scheduled([(queue, "m", base + 300)])
    assert state.scheduled_counts([queue], base + 100) == {queue: 1}


def test_clear_scheduled_forgets_only_the_named_queues(state: AmqpState) -> None:
    q1, q2 = new_id(), new_id()
    due = time.time() + 600
    state.add_scheduled([(q1, "a", due), (q2, "b", due)])
    state.clear_scheduled([q1])
    state.clear_scheduled([])
    assert state.scheduled_counts([q1, q2], time.time()) == {q2: 1}


# -- purge marks and queue names ------------------------------------------------------------


def test_the_latest_purge_mark_wins(state: AmqpState) -> None:
    q1, q2, never = new_id(), new_id(), new_id()
    state.mark_purged([q1, q2], 1000.0)
    state.mark_purged([q1], 2000.5)
    state.mark_purged([q2], 500.0)  # an older purge's write landing last changes nothing
    assert state.purged_at([q1, q2, never]) == {q1: 2000.5, q2: 1000.0}
    assert state.purged_at([]) == {}


def test_queue_names_are_remembered_once(state: AmqpState) -> None:
    assert state.queues() == set()
    state.add_queues(["a", "b"])
    state.add_queues(["b", "c.d"])
    state.add_queues([])
    assert state.queues() == {"a", "b", "c.d"}


# -- sharing: instances, processes, fork ----------------------------------------------------


def test_two_instances_on_one_store_see_each_others_records(url: str) -> None:
    message, queue = new_id(), new_id()
    with _open(url) as (_, one), _open(url) as (_, two):
        one.add_notes([(message, CHARGED)])
        two.add_notes([(message, SUSPECT)])
        one.add_scheduled([(queue, "m", time.time() + 600)])
        two.mark_purged([queue], 42.0)
        two.add_queues([queue])
        assert one.read_notes([message]) == two.read_notes([message]) == {
            message: [CHARGED, SUSPECT]}
        assert two.scheduled_counts([queue], time.time()) == {queue: 1}
        assert one.purged_at([queue]) == {queue: 42.0}
        assert one.queues() == {queue}
        two.drop_notes({message: 1})
        assert one.read_notes([message]) == {message: [SUSPECT]}


CHILD = """
import json, sys, time
from celeriac.brokers import broker_from_url
from celeriac.brokers.amqp.state import ReturnNote, state_for
state = state_for(broker_from_url(sys.argv[1]))
message, queue = sys.argv[2], sys.argv[3]
seen = state.read_notes([message])
state.drop_notes({message: 1})
state.add_notes([(message, ReturnNote(settle="ack"))])
state.add_scheduled([(queue, "child", time.time() + 600)])
state.mark_purged([queue], 7.0)
state.add_queues(["from-child"])
print(json.dumps({k: [n.as_dict() for n in v] for k, v in seen.items()}))
"""


def test_another_process_reads_and_writes_the_same_records(url: str) -> None:
    message, queue = new_id(), new_id()
    with _open(url) as (_, state):
        state.add_notes([(message, CHARGED), (message, DEAD)])
        out = subprocess.run([sys.executable, "-c", CHILD, url, message, queue], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert json.loads(out) == {message: [CHARGED.as_dict(), DEAD.as_dict()]}
        assert state.read_notes([message]) == {message: [DEAD, ReturnNote(settle="ack")]}
        assert state.scheduled_counts([queue], time.time()) == {queue: 1}
        assert state.purged_at([queue]) == {queue: 7.0}
        assert state.queues() == {"from-child"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_uses_the_parents_state_object(state: AmqpState) -> None:
    message = new_id()
    state.add_notes([(message, CHARGED)])  # the parent's connections are open now
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if its calls all worked
        code = 1
        try:
            if state.read_notes([message]) == {message: [CHARGED]}:
                state.add_notes([(message, SUSPECT)])
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert state.read_notes([message]) == {message: [CHARGED, SUSPECT]}


# -- choosing the implementation ------------------------------------------------------------


def test_state_for_picks_the_store_and_refuses_memory(url: str) -> None:
    with _open(url) as (_, state):
        expected = "SQLiteAmqpState" if url.startswith("sqlite") else "RedisAmqpState"
        assert type(state).__name__ == expected
    with pytest.raises(ConfigurationError, match=r"memory:// .*inside one process") as info:
        state_for(broker_from_url("memory://"))
    assert "redis://" in str(info.value) and "sqlite://" in str(info.value)


# -- store specifics ------------------------------------------------------------------------


def test_sqlite_tables_are_added_to_a_file_the_broker_made_and_a_read_comes_first(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = broker_from_url(url)
    store.stats()  # the broker's own file, without the AMQP tables
    assert state_for(store).queues() == set()  # the first call is a read
    with sqlite3.connect(tmp_path / "old.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"amqp_notes", "amqp_scheduled", "amqp_purged", "amqp_queues", "messages"} <= tables


def test_sqlite_expired_notes_are_skipped_and_deleted_by_a_later_write(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = state_for(broker_from_url(f"sqlite:///{path}"))
    old, fresh = new_id(), new_id()
    state.add_notes([(old, CHARGED), (old, SUSPECT)])
    with sqlite3.connect(path) as conn:
        expires = {row[0] for row in conn.execute("SELECT expires FROM amqp_notes")}
        conn.execute("UPDATE amqp_notes SET expires = ?", (time.time() - 1,))  # a day passed
    conn.close()
    assert len(expires) == 1 and abs(expires.pop() - time.time() - NOTE_TTL) < 600
    assert state.read_notes([old]) == {}
    state.add_notes([(fresh, CHARGED)])
    with sqlite3.connect(path) as conn:
        left = [row[0] for row in conn.execute("SELECT id FROM amqp_notes")]
    conn.close()
    assert left == [fresh]


def test_sqlite_a_new_note_keeps_all_of_its_messages_notes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = state_for(broker_from_url(f"sqlite:///{path}"))
    message = new_id()
    state.add_notes([(message, CHARGED)])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE amqp_notes SET expires = ?", (time.time() + 5,))  # nearly a day old
    conn.close()
    state.add_notes([(message, SUSPECT)])
    assert state.read_notes([message]) == {message: [CHARGED, SUSPECT]}
    with sqlite3.connect(path) as conn:
        soonest = conn.execute("SELECT min(expires) FROM amqp_notes").fetchone()[0]
    conn.close()
    assert soonest > time.time() + NOTE_TTL - 600


def test_redis_keys_expire(redis_url: str) -> None:
    """Notes live a day after the latest; a queue's scheduled set a day past its latest due,
    and an earlier entry added later does not shorten that."""
    with _open(redis_url) as (store, state):
        client, prefix = store._redis, store.prefix  # type: ignore[attr-defined]
        message, queue = new_id(), new_id()
        state.add_notes([(message, CHARGED)])
        assert NOTE_TTL * 1000 - 60_000 < client.pttl(f"{prefix}:amqp:notes:{message}") <= NOTE_TTL * 1000
        day_ms = 86_400_000
        state.add_scheduled([(queue, "far", time.time() + 3600)])
        state.add_scheduled([(queue, "near", time.time() + 1)])
        ttl = client.pttl(f"{prefix}:amqp:scheduled:{queue}")
        assert day_ms + 3_540_000 < ttl <= day_ms + 3_601_000


def test_redis_note_writes_retried_after_a_lost_reply_apply_once(redis_url: str) -> None:
    """The script ran, then the connection dropped before its reply: the retry finds the
    receipt, so a note is not appended twice (a second charge) nor a drop repeated (which
    would drop a note written since)."""
    import redis

    with _open(redis_url) as (store, state):
        real = store._script("amqp_state")  # type: ignore[attr-defined]
        calls: list[int] = []

        def lose_the_first_reply(**kwargs: object) -> object:
            value = real(**kwargs)
            calls.append(1)
            if len(calls) == 1:
                raise redis.ConnectionError("Connection closed by server. (simulated)")
            return value

        message = new_id()
        state.add_notes([(message, SUSPECT), (message, DEAD)])
        for write in (lambda: state.add_notes([(message, CHARGED)]),
                      lambda: state.drop_notes({message: 1})):
            calls.clear()
            store._scripts["amqp_state"] = lose_the_first_reply  # type: ignore[attr-defined]
            write()
            assert len(calls) == 2
        assert state.read_notes([message]) == {message: [DEAD, CHARGED]}
