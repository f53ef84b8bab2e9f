"""The contract of the dashboard's task search and task detail, on every result backend.

Same fixtures as ``test_backend.py``: each test runs once per backend, and a Redis
backend has a key prefix of its own on the session's server.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celeriac.backends import ResultBackend, ResultRecord, backend_from_url
from celeriac.backends.redis import RedisBackend
from celeriac.backends.search import PREFIX_SCAN, TaskSummary, child_ids
from celeriac.backends.sqlite import search_sql
from celeriac.brokers.base import WorkerEvent
from celeriac.brokers.memory import MemoryBroker
from celeriac.exceptions import ConfigurationError
from celeriac.states import FAILURE, PENDING, RETRY, STARTED, SUCCESS
from contract.test_backend import KINDS, UNINDEXED, _make_backend


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultBackend]:
    instance = _make_backend(request.param, request, tmp_path)
    yield instance
    instance.close()


@pytest.fixture(params=UNINDEXED)
def unindexed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultBackend]:
    """A shared backend with ``result_index`` off."""
    instance = _make_backend(request.param, request, tmp_path)
    yield instance
    instance.close()


def sibling(backend: ResultBackend, expires: float) -> ResultBackend:
    """A backend on the same store with another ``expires``."""
    other = type(backend)(backend.url, expires=expires)
    other.ping()
    return other


def record(status: str, name: str | None = "app.add", task_id: str | None = None,
           **fields: object) -> ResultRecord:
    done = time.time() if status in (SUCCESS, FAILURE, RETRY) else None
    return ResultRecord(task_id=task_id or str(uuid.uuid4()), status=status, name=name,
                        date_done=done, **fields)  # type: ignore[arg-type]


def ids(found: tuple[list[TaskSummary], int]) -> list[str]:
    return [item.task_id for item in found[0]]


def store_spaced(backend: ResultBackend, records: list[ResultRecord]) -> None:
    """One store each, a little apart: the order of stores is the search order."""
    for item in records:
        backend.store(item)
        time.sleep(0.002)


def test_search_filters_by_name_and_state_newest_first(backend: ResultBackend) -> None:
    a1, a2 = record(SUCCESS, "app.a"), record(FAILURE, "app.a")
    b1, b2 = record(SUCCESS, "app.b"), record(SUCCESS, "app.a")
    store_spaced(backend, [a1, a2, b1, b2])
    assert ids(backend.search()) == [b2.task_id, b1.task_id, a2.task_id, a1.task_id]
    assert backend.search()[1] == 4
    assert ids(backend.search(name="app.a")) == [b2.task_id, a2.task_id, a1.task_id]
    assert ids(backend.search(state=SUCCESS)) == [b2.task_id, b1.task_id, a1.task_id]
    assert ids(backend.search(name="app.a", state=SUCCESS)) == [b2.task_id, a1.task_id]
    assert backend.search(name="app.a", state=FAILURE) == (
        [TaskSummary(a2.task_id, "app.a", FAILURE, a2.date_done, None, None)], 1)
    assert backend.search(name="app.c") == ([], 0)
    assert backend.search(state=STARTED) == ([], 0)


def test_summaries_carry_queue_and_worker_when_recorded(backend: ResultBackend) -> None:
    item = record(SUCCESS, "app.x", queue="q1", worker="w@host", args=[1], kwargs={})
    backend.store(item)
    (found,), total = backend.search(name="app.x")
    assert total == 1
    assert found == TaskSummary(item.task_id, "app.x", SUCCESS, item.date_done, "q1", "w@host")


def test_pagination_gives_pages_and_the_total(backend: ResultBackend) -> None:
    records = [record(SUCCESS, "app.page") for _ in range(7)]
    store_spaced(backend, records)
    newest_first = [r.task_id for r in reversed(records)]
    pages = [backend.search(name="app.page", offset=offset, limit=3) for offset in (0, 3, 6, 9)]
    assert [ids(page) for page in pages] == [newest_first[0:3], newest_first[3:6],
                                             newest_first[6:7], []]
    assert {total for _, total in pages} == {7}
    assert backend.search(name="app.page", limit=0) == ([], 7)


def test_a_state_change_moves_the_task_between_state_indexes(backend: ResultBackend) -> None:
    task_id = str(uuid.uuid4())
    backend.store(record(PENDING, "app.move", task_id))
    assert ids(backend.search(state=PENDING)) == [task_id]
    backend.store(record(STARTED, "app.move", task_id))
    assert backend.search(state=PENDING) == ([], 0)
    assert ids(backend.search(state=STARTED, name="app.move")) == [task_id]
    backend.store(record(SUCCESS, "app.move", task_id))
    assert backend.search(state=STARTED) == ([], 0)
    assert backend.search(name="app.move", state=STARTED) == ([], 0)
    assert ids(backend.search(state=SUCCESS, name="app.move")) == [task_id]
    assert backend.search(name="app.move")[1] == 1  # one task, not one per state
    # A late STARTED is not stored over SUCCESS (ResultBackend.store): nor indexed.
    backend.store(record(STARTED, "app.move", task_id))
    assert backend.get(task_id).status == SUCCESS  # type: ignore[union-attr]
    assert backend.search(state=STARTED) == ([], 0)
    assert ids(backend.search(state=SUCCESS)) == [task_id]


def test_a_restored_task_comes_first_again(backend: ResultBackend) -> None:
    first, second = record(RETRY, "app.r"), record(SUCCESS, "app.r")
    store_spaced(backend, [first, second])
    assert ids(backend.search()) == [second.task_id, first.task_id]
    backend.store(record(SUCCESS, "app.r", first.task_id))
    assert ids(backend.search()) == [first.task_id, second.task_id]


def test_records_without_a_name_are_found_by_state_only(backend: ResultBackend) -> None:
    item = record(SUCCESS, None)
    backend.store(item)
    assert backend.search(state=SUCCESS)[0][0].task is None
    assert ids(backend.search(state=SUCCESS)) == [item.task_id]
    assert backend.search(name="") == ([], 0)


def test_search_by_id_prefix(backend: ResultBackend) -> None:
    tag = uuid.uuid4().hex[:8]
    records = [record(SUCCESS if i % 2 else FAILURE, "app.p", task_id=f"{tag}-{i}")
               for i in range(4)]
    other = record(SUCCESS, "app.p")
    store_spaced(backend, [*records, other])
    assert ids(backend.search(task_id_prefix=tag)) == [r.task_id for r in reversed(records)]
    assert backend.search(task_id_prefix=tag)[1] == 4
    assert ids(backend.search(task_id_prefix=f"{tag}-2")) == [f"{tag}-2"]
    assert ids(backend.search(task_id_prefix=tag, state=SUCCESS)) == [f"{tag}-3", f"{tag}-1"]
    assert backend.search(task_id_prefix=tag, name="app.other") == ([], 0)
    assert backend.search(task_id_prefix=tag, offset=1, limit=2) == (
        backend.search(task_id_prefix=tag)[0][1:3], 4)
    assert backend.search(task_id_prefix=other.task_id)[1] == 1
    assert backend.search(task_id_prefix="no-such-prefix") == ([], 0)


def test_expired_records_leave_the_index(backend: ResultBackend) -> None:
    short = sibling(backend, expires=0.4)
    try:
        gone = [record(SUCCESS, "app.exp"), record(STARTED, "app.exp")]
        short.store_many(gone)
        assert short.search(name="app.exp")[1] == 2
        assert short.search(task_id_prefix=gone[0].task_id)[1] == 1
        time.sleep(0.6)
        kept = record(SUCCESS, "app.exp")
        short.store(kept)  # a store prunes, too
        assert short.search(name="app.exp") == (short.search(state=SUCCESS)[0], 1)
        assert ids(short.search(name="app.exp")) == [kept.task_id]
        assert short.search(state=STARTED) == ([], 0)
        assert short.search(task_id_prefix=gone[0].task_id) == ([], 0)
        assert short.search() == (short.search(name="app.exp")[0], 1)
    finally:
        short.close()


def test_forget_takes_the_task_out_of_the_index(backend: ResultBackend) -> None:
    item, kept = record(FAILURE, "app.f"), record(FAILURE, "app.f")
    backend.store_many([item, kept])
    backend.forget(item.task_id)
    assert ids(backend.search(name="app.f", state=FAILURE)) == [kept.task_id]
    assert backend.search(task_id_prefix=item.task_id) == ([], 0)


def test_bad_pages_are_refused(backend: ResultBackend) -> None:
    with pytest.raises(ValueError, match="negative"):
        backend.search(offset=-1)
    with pytest.raises(ValueError, match="over"):
        backend.search(limit=100_000)


def test_task_detail_has_record_lineage_children_and_events(backend: ResultBackend) -> None:
    parent, group = str(uuid.uuid4()), str(uuid.uuid4())
    item = record(FAILURE, "app.d", args=[1, "<b>"], kwargs={"k": 2}, parent_id=parent,
                  group_id=group, deliveries=3, retries=2, traceback="Traceback...",
                  exc_type="KeyError", exc_message="'x'",
                  children=[[["child-1", None], None],
                            [["group-1", None], [[["m-1", None], None], [["m-2", None], None]]]])
    backend.store(item)
    broker = MemoryBroker("memory://")
    broker.emit([WorkerEvent("task-received", "w1", {"uuid": item.task_id, "name": "app.d"}, 1.0),
                 WorkerEvent("task-received", "w1", {"uuid": "someone-else"}, 1.5),
                 WorkerEvent("task-failed", "w1", {"uuid": item.task_id, "exception": "x"}, 2.0)])
    detail = backend.task_detail(item.task_id, broker=broker)
    assert detail is not None
    assert detail.record.args == [1, "<b>"] and detail.record.kwargs == {"k": 2}
    assert detail.record.traceback == "Traceback..." and detail.record.retries == 2
    assert (detail.parent_id, detail.group_id, detail.deliveries) == (parent, group, 3)
    assert detail.children == ["child-1", "m-1", "m-2"]
    assert [(e.type, e.time, e.worker) for e in detail.events] == [
        ("task-received", 1.0, "w1"), ("task-failed", 2.0, "w1")]
    assert detail.events[1].fields["exception"] == "x"
    assert detail.summary.state == FAILURE
    plain = backend.task_detail(item.task_id)
    assert plain is not None and plain.events == []
    assert backend.task_detail("no-such-task") is None


def test_child_ids_skips_what_is_not_a_result_tuple() -> None:
    assert child_ids(None) == []
    assert child_ids([["odd"], 3, [["a", None], None]]) == ["a"]


def test_with_the_index_off_search_is_refused_and_the_rest_works(
        unindexed: ResultBackend) -> None:
    done, running = record(SUCCESS, "app.off"), record(STARTED, "app.off")
    unindexed.store_many([done, running])
    unindexed.store(record(STARTED, "app.off", done.task_id))  # never over a ready one
    assert unindexed.get(done.task_id).status == SUCCESS  # type: ignore[union-attr]
    assert unindexed.wait(done.task_id, timeout=5).task_id == done.task_id
    for query in ({}, {"name": "app.off"}, {"state": SUCCESS},
                  {"task_id_prefix": done.task_id[:8]}):
        with pytest.raises(ConfigurationError, match="result_index"):
            unindexed.search(**query)  # type: ignore[arg-type]
    detail = unindexed.task_detail(running.task_id)
    assert detail is not None and detail.summary.state == STARTED
    unindexed.forget(running.task_id)
    assert unindexed.task_detail(running.task_id) is None


def test_memory_backend_refuses_search_with_the_index_off_too() -> None:
    backend = backend_from_url("memory://", index=False)
    backend.store(record(SUCCESS))
    with pytest.raises(ConfigurationError, match="result_index"):
        backend.search()


def test_redis_with_the_index_off_writes_no_index_key(redis_url: str) -> None:
    backend = backend_from_url(redis_url, index=False)
    raw = redis.Redis.from_url(redis_url.split("?")[0])
    p = backend.prefix
    try:
        backend.store_many([record(SUCCESS, "app.off"), record(PENDING, "app.off")])
        assert raw.keys(f"{p}:tasks:*") == []
        assert len(raw.keys(f"{p}:result:*")) == 2
        assert all(0 < raw.pttl(key) <= 86_400_000 for key in raw.keys(f"{p}:result:*"))
        forever = backend_from_url(redis_url, expires=0, index=False)
        kept = record(SUCCESS, "app.off")
        forever.store(kept)
        assert raw.pttl(f"{p}:result:{kept.task_id}") == -1 and raw.keys(f"{p}:tasks:*") == []
        forever.close()
    finally:
        backend.close()
        raw.close()


def test_redis_a_task_stored_again_stays_listed_by_prefix(redis_url: str) -> None:
    """A store within half the TTL of the last one skips ``ids``: the id is there."""
    backend = backend_from_url(redis_url)
    raw = redis.Redis.from_url(redis_url.split("?")[0])
    try:
        task_id = str(uuid.uuid4())
        for status in (PENDING, STARTED, SUCCESS):
            backend.store(record(status, "app.again", task_id))
        assert raw.zrange(f"{backend.prefix}:tasks:ids", 0, -1) == [task_id.encode()]
        assert ids(backend.search(task_id_prefix=task_id[:8])) == [task_id]
        # One batch with the task twice: it ends in its last state's sets only.
        again = str(uuid.uuid4())
        backend.store_many([record(STARTED, "app.again", again),
                            record(SUCCESS, "app.again", again)])
        assert ids(backend.search(name="app.again", state=SUCCESS)) == [again, task_id]
        assert backend.search(state=STARTED) == ([], 0)
        assert not raw.exists(f"{backend.prefix}:tasks:s:STARTED")
    finally:
        backend.close()
        raw.close()


def test_sqlite_with_the_index_off_creates_no_search_index(tmp_path: Path) -> None:
    path = tmp_path / "off.db"
    backend = backend_from_url(f"sqlite:///{path}", index=False)
    backend.store(record(SUCCESS, "app.off"))
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'results' "
            "AND name NOT LIKE 'sqlite_autoindex%'")}
    assert names == {"results_recent"}  # what cleanup reads
    assert backend.cleanup() == 0
    backend.close()


# -- backend specifics --------------------------------------------------------------


def test_redis_index_sets_are_pruned_and_expire(redis_url: str) -> None:
    backend = backend_from_url(redis_url, expires=0.3)
    assert isinstance(backend, RedisBackend)
    raw = redis.Redis.from_url(redis_url.split("?")[0])
    p = backend.prefix
    try:
        old = record(SUCCESS, "app.old")
        backend.store(old)
        assert raw.zcard(f"{p}:tasks:all") == 1 and raw.exists(f"{p}:tasks:n:app.old")
        time.sleep(0.5)
        new = record(SUCCESS, "app.new")
        backend.store(new)
        assert raw.zrange(f"{p}:tasks:all", 0, -1) == [new.task_id.encode()]
        assert raw.zrange(f"{p}:tasks:ids", 0, -1) == [new.task_id.encode()]
        assert raw.zrange(f"{p}:tasks:s:SUCCESS", 0, -1) == [new.task_id.encode()]
        # Sets nobody writes any more go with their records' TTL.
        assert not raw.exists(f"{p}:tasks:n:app.old", f"{p}:tasks:meta:{old.task_id}")
        assert 0 < raw.pttl(f"{p}:tasks:n:app.new") <= 450  # 1.5 TTL, refreshed below 1
    finally:
        backend.close()
        raw.close()


def test_redis_a_prefix_scan_is_bounded(redis_url: str) -> None:
    backend = backend_from_url(redis_url)
    try:
        backend.store_many([record(SUCCESS, "app.many", task_id=f"many-{i:05d}")
                            for i in range(PREFIX_SCAN + 10)])
        assert backend.search(task_id_prefix="many-")[1] == PREFIX_SCAN
        assert backend.search(name="app.many")[1] == PREFIX_SCAN + 10
    finally:
        backend.close()


def test_sqlite_file_of_an_older_version_gains_the_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE results (task_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
                     "payload TEXT NOT NULL, expires_at REAL)")
        old, endless = record(SUCCESS, "app.before"), record(SUCCESS, "app.before")
        conn.execute("INSERT INTO results VALUES (?, ?, ?, ?)",
                     (old.task_id, SUCCESS, old.to_json(), time.time() + 3600))
        conn.execute("INSERT INTO results VALUES (?, ?, ?, NULL)",
                     (endless.task_id, SUCCESS, endless.to_json()))
    conn.close()
    backend = backend_from_url(f"sqlite:///{path}", expires=7200)
    new = record(SUCCESS, "app.after")
    backend.store(new)
    # The old rows get their name from the record, and a store time from their expiry
    # (an hour ago); one kept forever has none and is listed only with expires <= 0.
    assert ids(backend.search(state=SUCCESS)) == [new.task_id, old.task_id]
    assert ids(backend.search(name="app.before")) == [old.task_id]
    assert ids(backend.search(name="app.after")) == [new.task_id]
    forever = backend_from_url(f"sqlite:///{path}", expires=0)
    assert ids(forever.search(name="app.before")) == [old.task_id, endless.task_id]
    forever.close()
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master "
                                                  "WHERE type = 'index'")}
    conn.close()
    assert {"results_recent", "results_by_state", "results_by_name"} <= indexes
    assert "results_expires_at" not in indexes  # results_recent serves cleanup
    backend.close()


def test_sqlite_search_reads_its_index_and_never_sorts_all_rows(tmp_path: Path) -> None:
    backend = backend_from_url(f"sqlite:///{tmp_path / 'r.db'}")
    backend.store(record(SUCCESS))
    backend.close()
    conn = sqlite3.connect(tmp_path / "r.db")
    try:
        def plans(name: str | None, state: str | None) -> tuple[str, str]:
            count, page, params = search_sql(None, name, state, time.time(), 86400)
            return tuple(" ".join(str(row[-1]) for row in conn.execute(
                f"EXPLAIN QUERY PLAN {sql}", args)) for sql, args in (  # type: ignore[return-value]
                    (count, params), (page, [*params, 50, 0])))
        for name, state, index in ((None, None, "results_recent"),
                                   (None, SUCCESS, "results_by_state"),
                                   ("x", None, "results_by_name"),
                                   ("x", SUCCESS, "results_by_name")):
            count, page = plans(name, state)
            assert f"COVERING INDEX {index}" in count, count
            assert index in page and "TEMP B-TREE" not in page, page
    finally:
        conn.close()


def test_task_events_reads_the_log_newest_chunk_first(tmp_path: Path) -> None:
    from celeriac.backends.search import EVENTS_CHUNK, read_task_events, task_events
    from celeriac.brokers import broker_from_url

    broker = broker_from_url(f"sqlite:///{tmp_path / 'events.db'}")
    assert broker.newest_event_seq() == 0 and task_events(broker, "t") == []
    filler = [WorkerEvent("task-succeeded", "w", {"uuid": "other"}, 1.0)] * (EVENTS_CHUNK - 1)
    broker.emit([WorkerEvent("task-received", "w", {"uuid": "t", "retries": 0}, 1.0),
                 *filler, *filler,
                 WorkerEvent("task-retried", "w", {"uuid": "t"}, 2.0),
                 WorkerEvent("task-received", "w", {"uuid": "t", "retries": 1}, 3.0),
                 WorkerEvent("task-succeeded", "w", {"uuid": "t"}, 4.0)])
    newest = broker.newest_event_seq()
    assert newest == 2 * EVENTS_CHUNK + 2 and broker.events(newest, 1) == []
    both_runs = task_events(broker, "t", runs=2)  # three chunks back to the first run
    assert [(e.type, e.time) for e in both_runs] == [
        ("task-received", 1.0), ("task-retried", 2.0), ("task-received", 3.0),
        ("task-succeeded", 4.0)]
    # One run asked for: the newest chunk holds its task-received, the read stops there.
    assert [e.time for e in task_events(broker, "t", runs=1)] == [2.0, 3.0, 4.0]
    # A bound on the read: the newest chunk only; the first run is older, and it says so.
    bounded = read_task_events(broker, "t", runs=2, scan=EVENTS_CHUNK)
    assert [e.time for e in bounded.events] == [2.0, 3.0, 4.0] and bounded.partial
    whole = read_task_events(broker, "t", runs=2, scan=10 * EVENTS_CHUNK)
    assert len(whole.events) == 4 and not whole.partial
    assert not read_task_events(broker, "t", runs=1, scan=EVENTS_CHUNK).partial  # found
    broker.events_kept = EVENTS_CHUNK  # only the newest events count as kept
    assert [e.time for e in task_events(broker, "t", runs=2)] == [2.0, 3.0, 4.0]
    # Not partial: the bound is not what stopped it (the oldest event kept is).
    assert not read_task_events(broker, "t", runs=2, scan=EVENTS_CHUNK).partial
    broker.close()
