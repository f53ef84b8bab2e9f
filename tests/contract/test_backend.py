"""The contract every result backend must meet.

Each test runs once per backend in ``backend``'s params. Tests only use the
public ``ResultBackend`` interface (plus ``type(backend)(backend.url, ...)`` to
get a sibling with other options), so a new backend joins by adding a param.
Task ids are random so backends on a shared server do not see each other's rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac.backends import (
    BACKENDS,
    ResultBackend,
    ResultRecord,
    backend_from_url,
)
from celeriac.exceptions import BackendError, ConfigurationError, SerializationError, TimeoutError
from celeriac.states import FAILURE, RETRY, STARTED, SUCCESS

REPO_ROOT = Path(__file__).resolve().parents[2]


#: Every backend; SHARED are those that separate processes can share.
KINDS = ["memory", "sqlite", "redis"]
SHARED = ["sqlite", "redis"]
#: The shared backends again with ``result_index`` off: storing, waiting, chords and
#: groups are the same contract without the task index.
UNINDEXED = ["sqlite-noindex", "redis-noindex"]


def _make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> ResultBackend:
    urls = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / 'celeriac.db'}",
        # Asked for only here, so memory and sqlite runs start no server; the URL has a
        # key prefix of this test's own on the session's redis-server.
        "redis": lambda: str(request.getfixturevalue("redis_url")),
    }
    instance = backend_from_url(urls[kind.removesuffix("-noindex")](),
                                index=not kind.endswith("-noindex"))
    instance.ping()
    return instance


@pytest.fixture(params=KINDS + UNINDEXED)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultBackend]:
    instance = _make_backend(request.param, request, tmp_path)
    yield instance
    instance.close()


@pytest.fixture(params=SHARED)
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultBackend]:
    instance = _make_backend(request.param, request, tmp_path)
    yield instance
    instance.close()


def new_id() -> str:
    return f"test-{uuid.uuid4()}"


def later(delay: float, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` on another thread after ``delay`` seconds."""
    def run() -> None:
        time.sleep(delay)
        action()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- get / store -------------------------------------------------------------------


def test_get_unknown_id_is_none(backend: ResultBackend) -> None:
    assert backend.get(new_id()) is None


def test_success_round_trip_keeps_json_value(backend: ResultBackend) -> None:
    task_id = new_id()
    value = {
        "nested": {"list": [1, 2.5, "three", None, True, {"deep": []}]},
        "unicode": "çélériac ☃ 日本 \U0001f955",
        "none": None,
        "empty": {},
    }
    backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result=value,
                               name="tasks.add", retries=2, date_done=1700000000.5,
                               extra={"worker": "w1@host"}))
    got = backend.get(task_id)
    assert got is not None
    assert got.task_id == task_id
    assert got.status == SUCCESS
    assert got.ready
    assert got.result == value
    assert got.name == "tasks.add"
    assert got.retries == 2
    assert got.date_done == 1700000000.5
    assert got.extra == {"worker": "w1@host"}


@pytest.mark.parametrize("value", [None, 0, "", [], "plain", 3.25, [None, [None]]])
def test_scalar_and_falsy_results_survive(backend: ResultBackend, value: object) -> None:
    task_id = new_id()
    backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result=value))
    got = backend.get(task_id)
    assert got is not None
    assert got.result == value
    assert type(got.result) is type(value)


def test_failure_round_trip(backend: ResultBackend) -> None:
    task_id = new_id()
    tb = 'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: bad ü\n'
    backend.store(ResultRecord(task_id=task_id, status=FAILURE, exc_type="ValueError",
                               exc_message="bad ü", traceback=tb))
    got = backend.get(task_id)
    assert got is not None
    assert got.status == FAILURE
    assert got.ready
    assert (got.exc_type, got.exc_message, got.traceback) == ("ValueError", "bad ü", tb)
    assert got.result is None


def test_store_overwrites_earlier_state(backend: ResultBackend) -> None:
    task_id = new_id()
    backend.store(ResultRecord(task_id=task_id, status=STARTED))
    started = backend.get(task_id)
    assert started is not None
    assert started.status == STARTED
    assert not started.ready
    backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result=42))
    got = backend.get(task_id)
    assert got is not None
    assert (got.status, got.result) == (SUCCESS, 42)


@pytest.mark.parametrize("late", [STARTED, RETRY, "PROGRESS"])
def test_a_ready_record_is_never_replaced_by_an_unready_one(backend: ResultBackend,
                                                             late: str) -> None:
    """A retry's new run can store SUCCESS before the RETRY of the run that asked for it
    is stored: the late RETRY must not hide the result (get() would wait for ever)."""
    task_id = new_id()
    backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result=7))
    backend.store(ResultRecord(task_id=task_id, status=late))
    backend.store_many([ResultRecord(task_id=task_id, status=late),
                        ResultRecord(task_id=new_id(), status=late)])
    got = backend.get(task_id)
    assert got is not None and (got.status, got.result) == (SUCCESS, 7)
    assert backend.wait(task_id, timeout=1).result == 7
    # A ready record still replaces a ready one (a task id run again), and unready
    # records replace each other.
    backend.store(ResultRecord(task_id=task_id, status=FAILURE, exc_type="ValueError"))
    assert backend.get(task_id).status == FAILURE  # type: ignore[union-attr]
    other = new_id()
    backend.store(ResultRecord(task_id=other, status=STARTED))
    backend.store(ResultRecord(task_id=other, status=late, extra={"n": 1}))
    assert backend.get(other).status == late  # type: ignore[union-attr]


def test_an_expired_ready_record_is_replaced(backend: ResultBackend) -> None:
    short = type(backend)(backend.url, expires=0.2)
    try:
        task_id = new_id()
        short.store(ResultRecord(task_id=task_id, status=SUCCESS, result=1))
        time.sleep(0.3)
        short.store(ResultRecord(task_id=task_id, status=STARTED))
        assert short.get(task_id).status == STARTED  # type: ignore[union-attr]
    finally:
        short.close()


def test_records_are_independent_copies(backend: ResultBackend) -> None:
    task_id = new_id()
    record = ResultRecord(task_id=task_id, status=SUCCESS, result={"items": [1]})
    backend.store(record)
    record.result["items"].append(2)
    first = backend.get(task_id)
    assert first is not None
    first.result["items"].append(3)
    second = backend.get(task_id)
    assert second is not None
    assert second.result == {"items": [1]}


def test_unserialisable_result_is_rejected(backend: ResultBackend) -> None:
    task_id = new_id()
    with pytest.raises(SerializationError):
        backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result=object()))
    with pytest.raises(SerializationError):
        backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result=float("nan")))
    assert backend.get(task_id) is None


def test_store_many(backend: ResultBackend) -> None:
    ids = [new_id() for _ in range(5)]
    backend.store_many([ResultRecord(task_id=t, status=SUCCESS, result=i)
                        for i, t in enumerate(ids)])
    for i, task_id in enumerate(ids):
        got = backend.get(task_id)
        assert got is not None
        assert (got.status, got.result) == (SUCCESS, i)
    backend.store_many([])


def test_store_many_is_all_or_nothing(backend: ResultBackend) -> None:
    good, bad = new_id(), new_id()
    with pytest.raises(SerializationError):
        backend.store_many([ResultRecord(task_id=good, status=SUCCESS, result=1),
                            ResultRecord(task_id=bad, status=SUCCESS, result={1j})])
    assert backend.get(good) is None
    assert backend.get(bad) is None


def test_get_many_keeps_order_and_gives_none_for_unknown(backend: ResultBackend) -> None:
    ids = [new_id() for _ in range(1200)]  # more than one SQLite statement's worth
    backend.store_many([ResultRecord(task_id=t, status=SUCCESS, result=i) for i, t in enumerate(ids)])
    unknown = new_id()
    asked = [*reversed(ids), unknown, ids[0]]
    got = backend.get_many(asked)
    assert [None if r is None else r.task_id for r in got] == [*reversed(ids), None, ids[0]]
    assert [r.result for r in got if r is not None] == [*range(1199, -1, -1), 0]
    assert backend.get_many([]) == []


def test_concurrent_stores_from_threads(backend: ResultBackend) -> None:
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            for i in range(20):
                backend.store(ResultRecord(task_id=f"{prefix}-{i}", status=SUCCESS, result=i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    prefixes = [new_id() for _ in range(6)]
    threads = [threading.Thread(target=writer, args=(p,)) for p in prefixes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    for prefix in prefixes:
        for i in range(20):
            got = backend.get(f"{prefix}-{i}")
            assert got is not None
            assert got.result == i


# -- forget / expiry ---------------------------------------------------------------


def test_forget(backend: ResultBackend) -> None:
    keep, drop = new_id(), new_id()
    backend.store_many([ResultRecord(task_id=keep, status=SUCCESS, result="keep"),
                        ResultRecord(task_id=drop, status=SUCCESS, result="drop")])
    backend.forget(drop)
    assert backend.get(drop) is None
    assert backend.get(keep) is not None
    backend.forget(new_id())  # unknown ids are not an error


def test_expired_records_vanish_and_cleanup_counts_them(backend: ResultBackend) -> None:
    short = type(backend)(backend.url, expires=0.2)
    try:
        gone, kept = new_id(), new_id()
        short.store(ResultRecord(task_id=gone, status=SUCCESS, result=1))
        backend.store(ResultRecord(task_id=kept, status=SUCCESS, result=2))
        assert short.get(gone) is not None
        time.sleep(0.3)
        assert short.get(gone) is None
        # A store that expires records by itself (Redis TTLs) leaves nothing to clean up.
        assert short.cleanup() == (0 if short.expires_itself else 1)
        assert short.cleanup() == 0
        assert backend.get(kept) is not None  # not expired, so not cleaned up
        assert backend.cleanup() == 0
    finally:
        short.close()


# -- wait --------------------------------------------------------------------------


def test_wait_returns_ready_record_at_once(backend: ResultBackend) -> None:
    task_id = new_id()
    backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result="done"))
    start = time.monotonic()
    got = backend.wait(task_id, timeout=5)
    assert got.result == "done"
    assert time.monotonic() - start < 0.5


def test_wait_sees_record_stored_by_another_thread(backend: ResultBackend) -> None:
    task_id = new_id()
    assert backend.get(task_id) is None
    thread = later(0.15, lambda: backend.store(
        ResultRecord(task_id=task_id, status=SUCCESS, result={"by": "thread"})))
    start = time.monotonic()
    got = backend.wait(task_id, timeout=5)
    elapsed = time.monotonic() - start
    thread.join()
    assert got.result == {"by": "thread"}
    assert 0.1 <= elapsed < 1.5


def test_wait_times_out_on_time(backend: ResultBackend) -> None:
    timeout = 0.4
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        backend.wait(new_id(), timeout=timeout)
    elapsed = time.monotonic() - start
    assert timeout <= elapsed < timeout + 1.0


def test_wait_ignores_states_that_are_not_ready(backend: ResultBackend) -> None:
    task_id = new_id()
    backend.store(ResultRecord(task_id=task_id, status=STARTED))
    with pytest.raises(TimeoutError):
        backend.wait(task_id, timeout=0.2)

    def progress() -> None:
        backend.store(ResultRecord(task_id=task_id, status=RETRY, exc_type="IOError",
                                   exc_message="again", retries=1))
        time.sleep(0.2)
        backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result="finally",
                                   retries=1))

    thread = later(0.1, progress)
    start = time.monotonic()
    got = backend.wait(task_id, timeout=5)
    elapsed = time.monotonic() - start
    thread.join()
    assert (got.status, got.result) == (SUCCESS, "finally")
    assert elapsed >= 0.25  # it did not return the RETRY record


def test_a_custom_state_is_stored_and_does_not_end_a_wait(backend: ResultBackend) -> None:
    """``update_state(state="PROGRESS", meta=...)``: readable at once, never taken for ready."""
    task_id = new_id()
    backend.store(ResultRecord(task_id=task_id, status="PROGRESS", result={"done": 3},
                               children=[[["c1", None], None]]))
    got = backend.get(task_id)
    assert got is not None and (got.status, got.result, got.ready) == ("PROGRESS", {"done": 3}, False)
    with pytest.raises(TimeoutError):
        backend.wait(task_id, timeout=0.3)
    thread = later(0.1, lambda: backend.store(ResultRecord(task_id=task_id, status=SUCCESS,
                                                           result=7)))
    assert backend.wait(task_id, timeout=5).result == 7
    thread.join()


def test_exception_origin_children_and_extended_fields_round_trip(backend: ResultBackend) -> None:
    task_id = new_id()
    children = [[["a", None], None], [["g", None], [[["b", None], None]]]]
    backend.store(ResultRecord(
        task_id=task_id, status=FAILURE, exc_type="Quota", exc_message="('ann', 3)",
        exc_module="myapp.errors", exc_args=["ann", 3], children=children, args=[1, "x"],
        kwargs={"k": None}, worker="w1@host", queue="high"))
    got = backend.get(task_id)
    assert got is not None
    assert (got.exc_module, got.exc_args, got.children) == ("myapp.errors", ["ann", 3], children)
    assert (got.args, got.kwargs, got.worker, got.queue) == ([1, "x"], {"k": None}, "w1@host", "high")


def test_unset_new_fields_stay_none_and_are_not_written(backend: ResultBackend) -> None:
    task_id = new_id()
    record = ResultRecord(task_id=task_id, status=SUCCESS, result=1)
    assert not {"exc_module", "exc_args", "children", "args", "kwargs", "worker",
                "queue"} & set(record.to_dict())
    backend.store(record)
    got = backend.get(task_id)
    assert got is not None
    assert (got.exc_module, got.exc_args, got.children, got.args, got.kwargs, got.worker,
            got.queue) == (None,) * 7


def test_records_written_before_the_new_fields_still_load() -> None:
    old = ('{"task_id": "t", "status": "FAILURE", "result": null, "exc_type": "ValueError", '
           '"exc_message": "bad", "traceback": null, "name": "tasks.f", "retries": 0, '
           '"date_done": 1.5, "extra": {}}')
    got = ResultRecord.from_json(old, "old store")
    assert (got.exc_type, got.exc_module, got.exc_args, got.children) == ("ValueError", None, None, None)


CHILD_STORES = """
import sys, time
from celeriac.backends import ResultRecord, backend_from_url
from celeriac.states import SUCCESS
backend = backend_from_url(sys.argv[1])
backend.ping()
print("ready", flush=True)
time.sleep(0.2)
backend.store(ResultRecord(task_id=sys.argv[2], status=SUCCESS, result={"pid": sys.argv[3]}))
"""


def test_wait_sees_record_stored_by_another_process(shared_backend: ResultBackend) -> None:
    backend = shared_backend
    task_id = new_id()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_STORES, backend.url, task_id, "child"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        assert backend.get(task_id) is None
        got = backend.wait(task_id, timeout=10)
        assert (got.status, got.result) == (SUCCESS, {"pid": "child"})
    finally:
        assert child.wait(10) == 0


# -- SQLite specifics and the URL registry -------------------------------------------


def test_sqlite_unopenable_path_fails_clearly_on_ping(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "r.db"
    instance = backend_from_url(f"sqlite:///{missing}")
    with pytest.raises(BackendError, match="no/such/dir") as info:
        instance.ping()
    assert "\n" not in str(info.value)
    directory = backend_from_url(f"sqlite:///{tmp_path}")  # a directory, not a file
    with pytest.raises(BackendError, match="unable to open"):
        directory.ping()


def test_backend_from_url_picks_class_by_scheme(tmp_path: Path) -> None:
    assert type(backend_from_url("memory://")) is BACKENDS["memory"]
    sqlite = backend_from_url(f"sqlite:///{tmp_path / 'x.db'}", expires=7.0)
    assert type(sqlite) is BACKENDS["sqlite"]
    assert sqlite.expires == 7.0


def test_backend_from_url_rejects_unknown_scheme() -> None:
    with pytest.raises(ConfigurationError, match=r"memory.*sqlite"):
        backend_from_url("nosuch://host/0")


# -- saved groups (GroupResult.save / restore / delete) ----------------------------------


def test_save_group_round_trip_delete_and_unknown(backend: ResultBackend) -> None:
    group_id, other = new_id(), new_id()
    members = [[["a", None], None], [["b", None], None]]
    backend.save_group(group_id, members)
    assert backend.restore_group(group_id) == members
    assert backend.restore_group(other) is None
    backend.save_group(group_id, members[:1])  # a second save replaces the first
    assert backend.restore_group(group_id) == members[:1]
    backend.delete_group(group_id)
    assert backend.restore_group(group_id) is None
    backend.delete_group(other)  # unknown ids are not an error


def test_group_result_save_restore_delete(backend: ResultBackend) -> None:
    from celeriac import Celeriac
    from celeriac.result import AsyncResult, GroupResult

    app = Celeriac("groups")
    ids = [new_id() for _ in range(3)]
    group: GroupResult[object] = GroupResult(new_id(), [AsyncResult(i, app) for i in ids], app=app)
    assert group.save(backend=backend) is group
    restored = GroupResult.restore(group.id or "", backend=backend, app=app)
    assert restored is not None
    assert restored == group
    assert [r.id for r in restored] == ids
    assert restored.app is app
    assert GroupResult.restore(new_id(), backend=backend, app=app) is None
    group.delete(backend=backend)
    assert GroupResult.restore(group.id or "", backend=backend, app=app) is None
    with pytest.raises(ValueError, match="without an id"):
        GroupResult(None, [], app=app).save(backend=backend)


def test_group_result_uses_the_apps_backend(shared_backend: ResultBackend) -> None:
    """``save()``/``restore(id)`` with no backend: the app's, as configured (another client)."""
    from celeriac import Celeriac
    from celeriac.result import GroupResult

    writer, reader = (Celeriac(name, result_backend=shared_backend.url) for name in ("w", "r"))
    group = GroupResult(new_id(), [writer.AsyncResult(new_id())], app=writer).save()
    restored = GroupResult.restore(group.id or "", app=reader)
    assert restored is not None and restored == group and restored.app is reader
    writer.close()
    reader.close()


def test_saved_groups_expire(backend: ResultBackend) -> None:
    short = type(backend)(backend.url, expires=0.2)
    try:
        group_id = new_id()
        short.save_group(group_id, [[["a", None], None]])
        assert short.restore_group(group_id) is not None
        time.sleep(0.3)
        assert short.restore_group(group_id) is None
        short.cleanup()
        assert short.restore_group(group_id) is None
    finally:
        short.close()


# -- chord join: the exactly-once primitive (docs/canvas-chords.md) ----------------------


def test_chord_fires_on_the_member_that_completes_the_header(backend: ResultBackend) -> None:
    group_id = new_id()
    assert backend.chord_members(group_id) is None
    assert backend.chord_join(group_id, 2, "r2", 3) is False
    assert backend.chord_members(group_id) == ["r2"]
    assert backend.chord_join(group_id, 0, "r0", 3) is False
    assert backend.chord_join(group_id, 1, "r1", 3) is True
    assert backend.chord_members(group_id) == ["r0", "r1", "r2"]  # header order, not join order


def test_chord_duplicates_count_once(backend: ResultBackend) -> None:
    group_id = new_id()
    assert backend.chord_join(group_id, 0, "r0", 3) is False
    assert backend.chord_join(group_id, 0, "r0-again", 3) is False  # a redelivery
    assert backend.chord_join(group_id, 1, "r1", 3) is False
    assert backend.chord_join(group_id, 1, "r1", 3) is False
    assert backend.chord_members(group_id) == ["r0", "r1"]  # the first result id stays
    assert backend.chord_join(group_id, 2, "r2", 3) is True
    assert backend.chord_join(group_id, 0, "r0", 3) is False  # late duplicates never fire


def test_chord_firing_member_fires_again_until_done(backend: ResultBackend) -> None:
    """The firing member redelivered (it died before sending the body) must send it."""
    group_id = new_id()
    backend.chord_join(group_id, 0, "r0", 2)
    assert backend.chord_join(group_id, 1, "r1", 2) is True
    assert backend.chord_join(group_id, 1, "r1", 2) is True
    assert backend.chord_join(group_id, 0, "r0", 2) is False
    backend.chord_done(group_id)
    assert backend.chord_join(group_id, 1, "r1", 2) is False
    assert backend.chord_join(group_id, 0, "r0", 2) is False
    assert backend.chord_members(group_id) == ["r0", "r1"]  # kept until it expires
    backend.chord_done(new_id())  # unknown chord: nothing to mark, not an error


def test_chord_forget_lets_the_same_group_id_run_again(backend: ResultBackend) -> None:
    group_id = new_id()
    assert backend.chord_join(group_id, 0, "r0", 1) is True
    backend.chord_done(group_id)
    backend.chord_claim_body(group_id, "first-run")
    assert backend.chord_join(group_id, 0, "r0", 1) is False
    backend.chord_forget(group_id)
    assert backend.chord_members(group_id) is None
    assert backend.chord_join(group_id, 0, "r0", 1) is True  # a new run
    assert backend.chord_claim_body(group_id, "second-run") is True
    backend.chord_forget(new_id())  # unknown: not an error


def test_chord_of_one(backend: ResultBackend) -> None:
    assert backend.chord_join(new_id(), 0, "r0", 1) is True


def test_chord_bad_index_or_size_is_refused(backend: ResultBackend) -> None:
    group_id = new_id()
    for index, size in ((3, 3), (-1, 3), (0, 0)):
        with pytest.raises(ValueError, match="not in"):
            backend.chord_join(group_id, index, "r", size)
    backend.chord_join(group_id, 0, "r0", 3)
    with pytest.raises(ValueError, match=r"size 4.*recorded size 3"):
        backend.chord_join(group_id, 1, "r1", 4)
    assert backend.chord_members(group_id) == ["r0"]  # the refused join recorded nothing


def test_chord_state_expires(backend: ResultBackend) -> None:
    group_id = new_id()
    assert backend.chord_join(group_id, 0, "r0", 2, expires=0.2) is False
    time.sleep(0.3)
    assert backend.chord_members(group_id) is None
    # The expired member is forgotten: the chord starts over (so expires must outlast
    # the slowest member; docs/canvas-chords.md).
    assert backend.chord_join(group_id, 1, "r1", 2, expires=0.2) is False
    assert backend.chord_members(group_id) == ["r1"]
    backend.cleanup()
    # Each join restarts the clock: state joined within the expiry stays.
    other = new_id()
    backend.chord_join(other, 0, "r0", 2, expires=0.5)
    time.sleep(0.3)
    assert backend.chord_join(other, 1, "r1", 2, expires=0.5) is True


def test_chord_claim_body(backend: ResultBackend) -> None:
    group_id = new_id()
    backend.chord_join(group_id, 0, "r0", 1)
    assert backend.chord_claim_body(group_id, "copy-1") is True
    assert backend.chord_claim_body(group_id, "copy-1") is True  # a redelivery of that copy
    assert backend.chord_claim_body(group_id, "copy-2") is False  # a second copy: dropped
    # A body whose chord state is gone (expired) still claims, once.
    lone = new_id()
    assert backend.chord_claim_body(lone, "a") is True
    assert backend.chord_claim_body(lone, "b") is False
    assert backend.chord_members(lone) is None


def _verdicts_by_chord(answers: list[tuple[str, int, bool]]) -> dict[str, set[int]]:
    fired: dict[str, set[int]] = {}
    for group_id, index, verdict in answers:
        fired.setdefault(group_id, set())
        if verdict:
            fired[group_id].add(index)
    return fired


def test_chord_join_races_between_threads(backend: ResultBackend) -> None:
    """Every member of 30 chords on its own thread, all released at once: each chord
    fires on exactly one member, and duplicates racing the originals change nothing."""
    size, chords = 4, [new_id() for _ in range(30)]
    jobs = [(g, i) for g in chords for i in range(size)]
    jobs += [(g, 0) for g in chords]  # a duplicate of member 0 in every chord
    answers: list[tuple[str, int, bool]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(size + 1)

    def member(index: int) -> None:
        try:
            barrier.wait(10)
            for group_id, i in jobs:
                if i == index or (index == size and i == 0):
                    answers.append((group_id, i, backend.chord_join(group_id, i, f"r{i}", size)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=member, args=(i,)) for i in range(size + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    fired = _verdicts_by_chord(answers)
    assert all(len(indexes) == 1 for indexes in fired.values()), fired
    for group_id in chords:
        assert backend.chord_members(group_id) == [f"r{i}" for i in range(size)]


CHILD_JOINS = """
import json, random, sys
from celeriac.backends import backend_from_url
backend = backend_from_url(sys.argv[1])
jobs = json.loads(sys.argv[2])
random.seed(sys.argv[3])
random.shuffle(jobs)
backend.ping()
print("ready", flush=True)
sys.stdin.readline()
answers = [[g, i, backend.chord_join(g, i, "r%d" % i, s)] for g, i, s in jobs]
print(json.dumps(answers), flush=True)
"""


def test_chord_join_races_between_processes(shared_backend: ResultBackend) -> None:
    """Four processes, each the worker of one header index of 40 chords and the
    redelivery of the next index, joining in its own random order, released at once:
    each chord fires on exactly one index, and gets all its members."""
    size, chords = 4, [new_id() for _ in range(40)]
    children = []
    for p in range(size):
        jobs = [[g, p, size] for g in chords] + [[g, (p + 1) % size, size] for g in chords]
        children.append(subprocess.Popen(
            [sys.executable, "-c", CHILD_JOINS, shared_backend.url, json.dumps(jobs), str(p)],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    answers: list[tuple[str, int, bool]] = []
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None
            answers += [(g, i, v) for g, i, v in json.loads(child.stdout.readline())]
    finally:
        for child in children:
            assert child.wait(60) == 0
    assert len(answers) == 2 * size * len(chords)
    fired = _verdicts_by_chord(answers)
    assert all(len(indexes) == 1 for indexes in fired.values()), fired
    for group_id in chords:
        assert shared_backend.chord_members(group_id) == [f"r{i}" for i in range(size)]
