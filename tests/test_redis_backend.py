"""What the Redis result backend does beyond the backend contract.

The contract (``tests/contract/test_backend.py``) covers behaviour every backend
shares; these tests look at the Redis side of it with a raw client: the key
schema and its TTLs, one pub/sub connection however many wait, recovery after
the pub/sub connection or the whole server goes away, and waiting from a gevent
process (in a subprocess: the pytest process is never monkey-patched here).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redisserver import RedisServer

from celeriac.backends import (
    BACKENDS,
    LAZY_BACKENDS,
    ResultRecord,
    backend_class,
    backend_from_url,
)
from celeriac.backends.redis import RedisBackend
from celeriac.exceptions import BackendError, ConfigurationError, TimeoutError
from celeriac.redisconn import split_url
from celeriac.states import RETRY, STARTED, SUCCESS

REPO_ROOT = Path(__file__).resolve().parents[1]


def new_id() -> str:
    return f"test-{uuid.uuid4()}"


def named(url: str, name: str) -> str:
    """``url`` whose connections carry CLIENT SETNAME ``name`` (and so get a pool of their own)."""
    return f"{url}&client_name={name}"


def connections(raw: redis.Redis, name: str, kind: str | None = None) -> int:
    clients: list[dict[str, Any]] = raw.client_list(_type=kind) if kind else raw.client_list()
    return sum(1 for c in clients if c.get("name") == name)


def wait_for(predicate: Any, timeout: float = 10.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met after {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the same server, outside celeriac's pools."""
    client = redis.Redis.from_url(split_url(redis_url)[0])
    yield client
    client.close()


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    instance = backend_from_url(redis_url)
    assert isinstance(instance, RedisBackend)
    yield instance
    instance.close()


# -- registry ------------------------------------------------------------------------


def test_import_celeriac_does_not_import_redis() -> None:
    code = ("import sys, celeriac, celeriac.backends as b\n"
            "assert 'redis' not in sys.modules, 'redis imported'\n"
            "assert {'redis', 'rediss', 'unix'} <= set(b.known_schemes())\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_redis_schemes_are_lazy_and_resolve(redis_url: str) -> None:
    assert set(LAZY_BACKENDS) == {"redis", "rediss", "unix"}
    for scheme in LAZY_BACKENDS:
        assert backend_class(scheme) is RedisBackend
    instance = backend_from_url(redis_url, expires=7.0)
    try:
        assert type(instance) is RedisBackend
        assert instance.expires == 7.0
        assert instance.prefix == split_url(redis_url)[1]
    finally:
        instance.close()


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(BACKENDS, "rediss", raising=False)
    monkeypatch.setitem(sys.modules, "celeriac.backends.redis", None)  # makes the import fail
    with pytest.raises(ConfigurationError, match=r"pip install 'celeriac\[redis\]'"):
        backend_from_url("rediss://127.0.0.1:1/0")


# -- keys, TTLs, errors --------------------------------------------------------------


def test_key_schema_and_ttl(redis_url: str, raw: redis.Redis) -> None:
    prefix = split_url(redis_url)[1]
    kept, forever = new_id(), new_id()
    timed = backend_from_url(redis_url, expires=100)
    endless = backend_from_url(redis_url, expires=0)
    try:
        timed.store(ResultRecord(task_id=kept, status=SUCCESS, result=[1, 2]))
        key = f"{prefix}:result:{kept}"
        assert 95_000 < raw.pttl(key) <= 100_000
        stored = json.loads(raw.get(key) or b"")
        assert (stored["task_id"], stored["status"], stored["result"]) == (kept, SUCCESS, [1, 2])
        endless.store(ResultRecord(task_id=forever, status=SUCCESS))
        assert raw.ttl(f"{prefix}:result:{forever}") == -1  # expires <= 0: kept forever
        # Storing again under expires=0 drops the TTL an earlier store had set.
        endless.store(ResultRecord(task_id=kept, status=SUCCESS))
        assert raw.ttl(key) == -1
        index = {f"{prefix}:tasks:{name}" for name in (
            "all", "ids", "s:SUCCESS", f"meta:{kept}", f"meta:{forever}")}
        assert sorted(k.decode() for k in raw.scan_iter(f"{prefix}:*")) == sorted(
            [key, f"{prefix}:result:{forever}", *index])
        # The task index (celeriac.backends.redis_index) keeps the records' TTL.
        assert {raw.ttl(k) for k in index} == {-1}
        assert timed.cleanup() == 0  # Redis expires keys itself
    finally:
        timed.close()
        endless.close()


def test_chord_and_group_key_schema_and_ttl(redis_url: str, backend: RedisBackend,
                                             raw: redis.Redis) -> None:
    """Both chord hashes carry the TTL (refreshed by each join); a saved group too."""
    prefix = split_url(redis_url)[1]
    group_id = new_id()
    backend.chord_join(group_id, 1, "r1", 2, expires=100)
    state, members = f"{prefix}:chord:{group_id}", f"{prefix}:chord:{group_id}:members"
    assert raw.hgetall(members) == {b"1": b"r1"}
    assert raw.hget(state, "size") == b"2"
    assert all(95_000 < raw.pttl(key) <= 100_000 for key in (state, members))
    backend.chord_join(group_id, 0, "r0", 2, expires=0)  # expires <= 0: kept forever
    assert raw.hget(state, "fired") == b"0"
    assert raw.pttl(state) == raw.pttl(members) == -1
    backend.save_group(group_id, [[["a", None], None]])
    assert 0 < raw.pttl(f"{prefix}:group:{group_id}") <= backend.expires * 1000
    backend.chord_forget(group_id)
    assert not raw.exists(state, members)


def test_chord_join_survives_a_script_flush(backend: RedisBackend, raw: redis.Redis) -> None:
    """A restarted server has no scripts: EVALSHA's NOSCRIPT makes the client load it again."""
    group_id = new_id()
    assert backend.chord_join(group_id, 0, "r0", 2) is False
    raw.script_flush()
    assert backend.chord_join(group_id, 1, "r1", 2) is True
    raw.script_flush()
    assert backend.chord_claim_body(group_id, "t") is True
    raw.script_flush()
    backend.chord_done(group_id)
    assert backend.chord_join(group_id, 1, "r1", 2) is False


def test_the_chord_size_celerys_client_recorded_is_read(backend: RedisBackend,
                                                        raw: redis.Redis) -> None:
    group_id = new_id()
    assert backend.celery_chord_size(group_id) is None
    raw.set(f"celery-taskset-meta-{group_id}.s", 7)  # what Celery's set_chord_size writes
    assert backend.celery_chord_size(group_id) == 7


def test_store_many_publishes_each_status(redis_url: str, backend: RedisBackend,
                                          raw: redis.Redis) -> None:
    prefix = split_url(redis_url)[1]
    ids = [new_id() for _ in range(3)]
    pubsub = raw.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.psubscribe(f"{prefix}:done:*")
    try:
        backend.store_many([ResultRecord(task_id=ids[0], status=STARTED),
                            ResultRecord(task_id=ids[1], status=RETRY),
                            ResultRecord(task_id=ids[2], status=SUCCESS, result=3)])
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message:
                seen[message["channel"].decode()] = message["data"].decode()
        assert seen == {f"{prefix}:done:{ids[0]}": STARTED, f"{prefix}:done:{ids[1]}": RETRY,
                        f"{prefix}:done:{ids[2]}": SUCCESS}
    finally:
        pubsub.close()


@pytest.mark.parametrize("index", [True, False])
def test_a_batch_of_odd_ids_names_and_results_round_trips(redis_url: str, index: bool) -> None:
    """The records of a batch go to the store script as one JSON array: ids, names and
    results with quotes, backslashes, brackets, control characters and text beyond
    ASCII come back as they went, and the task index finds them by name."""
    backend = backend_from_url(redis_url, index=index)
    assert isinstance(backend, RedisBackend)
    tag = new_id()
    odd = ['q"uote', "back\\slash", "br]ack[et", "nul\x00and\ttab", "é ü 漢", "\u2028"]
    records = [ResultRecord(task_id=f"{tag}-{text}", status=SUCCESS, name=f"t.{tag}.{text}",
                            result={"text": text, "n": [1, 2.5, None]}, date_done=time.time())
               for text in odd]
    records.append(ResultRecord(task_id=f"{tag}-uuid", status=SUCCESS, name="t.uuid",
                                result=uuid.UUID(int=7), date_done=time.time()))
    try:
        backend.store_many(records)
        for record in records:
            got = backend.get(record.task_id)
            assert got is not None and got.result == record.result and got.name == record.name
        if index:  # the name went to the index as it was
            for record in records:
                found, total = backend.search(name=record.name)
                assert [t.task_id for t in found] == [record.task_id] and total == 1
    finally:
        backend.close()


def test_corrupt_record_is_a_backend_error(redis_url: str, backend: RedisBackend,
                                           raw: redis.Redis) -> None:
    task_id = new_id()
    raw.set(f"{split_url(redis_url)[1]}:result:{task_id}", b"{not json")
    with pytest.raises(BackendError, match="corrupt result record") as info:
        backend.get(task_id)
    assert "\n" not in str(info.value)


def test_unreachable_server_fails_fast_in_one_line() -> None:
    instance = backend_from_url("redis://:secret@127.0.0.1:1/0")  # nothing listens on port 1
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"127\.0\.0\.1") as info:
        instance.ping()
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert "secret" not in message


# -- waiting -------------------------------------------------------------------------


def test_waiters_share_one_pubsub_connection_and_a_bounded_pool(redis_url: str,
                                                                raw: redis.Redis) -> None:
    name = f"w{uuid.uuid4().hex[:8]}"
    instance = backend_from_url(named(redis_url, name))
    prefix = split_url(redis_url)[1]
    ids = [new_id() for _ in range(200)]
    got: dict[str, Any] = {}
    errors: list[BaseException] = []

    def waiter(task_id: str) -> None:
        try:
            got[task_id] = instance.wait(task_id, timeout=30).result
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(t,), daemon=True) for t in ids]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(raw.pubsub_channels(f"{prefix}:done:*")) == len(ids),
                 message="every waiter subscribed")
        assert connections(raw, name, "pubsub") == 1
        assert connections(raw, name) <= 33  # the pool's 32 plus the listener
        instance.store_many([ResultRecord(task_id=t, status=SUCCESS, result=t) for t in ids])
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert got == {t: t for t in ids}
        assert connections(raw, name) <= 33
        # The last waiter of a channel unsubscribes it.
        wait_for(lambda: raw.pubsub_channels(f"{prefix}:done:*") == [], message="unsubscribed")
    finally:
        instance.close()
    wait_for(lambda: connections(raw, name, "pubsub") == 0, message="listener closed")


def test_two_waiters_on_one_task_share_its_channel(redis_url: str, backend: RedisBackend,
                                                   raw: redis.Redis) -> None:
    task_id = new_id()
    channel = f"{split_url(redis_url)[1]}:done:{task_id}"
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(backend.wait(task_id, 10).result))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: raw.pubsub_numsub(channel) == [(channel.encode(), 1)], message="subscribed")
    backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result="both"))
    for thread in threads:
        thread.join(10)
    assert results == ["both", "both"]
    wait_for(lambda: raw.pubsub_numsub(channel) == [(channel.encode(), 0)], message="unsubscribed")


def test_timed_out_wait_unsubscribes(redis_url: str, backend: RedisBackend,
                                     raw: redis.Redis) -> None:
    prefix = split_url(redis_url)[1]
    with pytest.raises(TimeoutError):
        backend.wait(new_id(), timeout=0.2)
    wait_for(lambda: raw.pubsub_channels(f"{prefix}:done:*") == [], message="unsubscribed")


CHILD_WAITS = """
import sys
from celeriac.backends import backend_from_url
backend = backend_from_url(sys.argv[1])
print(backend.wait(sys.argv[2], timeout=20).result, flush=True)
backend.close()
"""


def test_wait_in_another_process_sees_our_store(redis_url: str, backend: RedisBackend,
                                                raw: redis.Redis) -> None:
    task_id = new_id()
    channel = f"{split_url(redis_url)[1]}:done:{task_id}"
    child = subprocess.Popen([sys.executable, "-c", CHILD_WAITS, redis_url, task_id],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: raw.pubsub_numsub(channel)[0][1] == 1, timeout=20,
                 message="child subscribed")
        backend.store(ResultRecord(task_id=task_id, status=SUCCESS, result="from parent"))
        out, _ = child.communicate(timeout=20)
        assert out.strip() == "from parent"
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
    assert child.returncode == 0


def test_wait_recovers_when_the_pubsub_connection_is_killed(
        redis_url: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    name = f"k{uuid.uuid4().hex[:8]}"
    backend = backend_from_url(named(redis_url, name))
    assert isinstance(backend, RedisBackend)
    backend.recheck_interval = 60.0  # only the reconnect may find the result in time
    prefix = split_url(redis_url)[1]
    task_id = new_id()
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(backend.wait(task_id, timeout=30).result),
                              daemon=True)
    caplog.set_level(logging.WARNING, logger="celeriac.redis")
    thread.start()
    channel = f"{prefix}:done:{task_id}"
    wait_for(lambda: raw.pubsub_numsub(channel)[0][1] == 1, message="subscribed")
    # Stored behind the backend's back, with no notification: only a look after the
    # reconnect can find it.
    raw.set(f"{prefix}:result:{task_id}",
            ResultRecord(task_id=task_id, status=SUCCESS, result="found").to_json())
    start = time.monotonic()
    # CLIENT KILL TYPE pubsub, narrowed to our listener (by id) so no other test's is hit.
    listener_ids = [c["id"] for c in raw.client_list(_type="pubsub") if c["name"] == name]
    assert len(listener_ids) == 1
    raw.client_kill_filter(_id=listener_ids[0], _type="pubsub")
    try:
        thread.join(10)
        assert got == ["found"]
        assert time.monotonic() - start < 5
        # The new connection gets notifications too.
        second = new_id()
        later = threading.Timer(0.2, lambda: backend.store(
            ResultRecord(task_id=second, status=SUCCESS, result=2)))
        later.start()
        start = time.monotonic()
        assert backend.wait(second, timeout=10).result == 2
        assert time.monotonic() - start < 1.5
        later.join()
    finally:
        backend.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "celeriac.redis"]
    assert sum("lost the connection" in line for line in lines) == 1, lines
    assert any("reconnected" in line for line in lines), lines


def test_wait_survives_a_server_restart(fresh_redis: RedisServer) -> None:
    url = fresh_redis.url(prefix=f"t-{uuid.uuid4().hex[:12]}")
    instance = backend_from_url(url)
    assert isinstance(instance, RedisBackend)
    instance.recheck_interval = 60.0
    task_id = new_id()
    got: list[Any] = []
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            got.append(instance.wait(task_id, timeout=40).result)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=waiter, daemon=True)
    try:
        thread.start()
        channel = f"{split_url(url)[1]}:done:{task_id}"
        raw = fresh_redis.client()
        wait_for(lambda: raw.pubsub_numsub(channel)[0][1] == 1, message="subscribed")
        raw.close()
        fresh_redis.kill()
        time.sleep(0.5)
        fresh_redis.start()
        instance.store(ResultRecord(task_id=task_id, status=SUCCESS, result="after restart"))
        thread.join(30)
        assert errors == []
        assert got == ["after restart"]
    finally:
        instance.close()


def test_wait_while_redis_is_down_ends_in_a_backend_error(fresh_redis: RedisServer) -> None:
    instance = backend_from_url(fresh_redis.url(prefix=f"t-{uuid.uuid4().hex[:12]}"))
    try:
        instance.ping()
        fresh_redis.kill()
        start = time.monotonic()
        with pytest.raises(BackendError) as info:
            instance.wait(new_id(), timeout=1.0)
        assert 1.0 <= time.monotonic() - start < 4.0  # on time, not after a long retry
        assert "\n" not in str(info.value)
    finally:
        instance.close()


GEVENT_WAITERS = """
import json, sys
from gevent import monkey
monkey.patch_all(thread=sys.argv[2] == "patch-threads")
import gevent
import redis
from celeriac.backends import backend_from_url
from celeriac.redisconn import split_url

url, name, count = sys.argv[1], sys.argv[3], int(sys.argv[4])
backend = backend_from_url(url)
ids = [f"g{i}" for i in range(count)]
results = {}

def waiter(task_id):
    results[task_id] = backend.wait(task_id, timeout=60).result

greenlets = [gevent.spawn(waiter, task_id) for task_id in ids]
gevent.sleep(0)
print("waiting", flush=True)
gevent.joinall(greenlets, timeout=90)
raw = redis.Redis.from_url(split_url(url)[0].split("?")[0])
mine = [c for c in raw.client_list() if c.get("name") == name]
print(json.dumps({
    "finished": sum(1 for g in greenlets if g.successful()),
    "right": sum(1 for t in ids if results.get(t) == t),
    "errors": [repr(g.exception) for g in greenlets if g.exception is not None][:3],
    "connections": len(mine),
    "pubsub": sum(1 for c in mine if "P" in c.get("flags", "")),
}), flush=True)
backend.close()
"""


@pytest.mark.parametrize("mode", ["patch-threads", "no-thread-patch"])
def test_gevent_waiters_in_a_subprocess(redis_url: str, raw: redis.Redis, mode: str) -> None:
    """500 greenlets each wait on their own task; one pub/sub connection serves them all.

    ``no-thread-patch`` is ``GEVENT_PATCHTHREAD=N``: green sockets, native threading.
    """
    pytest.importorskip("gevent")
    name = f"g{uuid.uuid4().hex[:8]}"
    url = named(redis_url, name)
    prefix = split_url(redis_url)[1]
    count = 500
    child = subprocess.Popen([sys.executable, "-c", GEVENT_WAITERS, url, mode, name, str(count)],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "waiting"
        wait_for(lambda: len(raw.pubsub_channels(f"{prefix}:done:*")) == count, timeout=30,
                 message="every greenlet subscribed")
        assert connections(raw, name, "pubsub") == 1
        assert connections(raw, name) <= 33
        storer = backend_from_url(redis_url)
        try:
            storer.store_many([ResultRecord(task_id=f"g{i}", status=SUCCESS, result=f"g{i}")
                               for i in range(count)])
        finally:
            storer.close()
        report = json.loads(child.stdout.readline())
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert report["errors"] == []
    assert (report["finished"], report["right"]) == (count, count)
    assert 1 <= report["connections"] <= 33
    assert report["pubsub"] == 1
