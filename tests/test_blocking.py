"""Where blocking calls run, and the client side (send, store, get) in a green process.

A gevent or eventlet program -- a web app that sends tasks, a script waiting on
results -- patches the standard library first and then uses celeriac from
greenlets without running any green pool. SQLite blocks the OS thread it runs
on, so there :func:`celeriac.blocking.offload` must move the calls off the
hub by itself, or one ``send_task`` waiting for the write lock freezes every
other greenlet of the program.

The in-process tests here run in both legs of ``./scripts/test``: with real
threads in the normal run, and in ``tests/gevent_leg.py``, where the
"threads" they start are greenlets and the test process itself is the green
client. The subprocess tests pin the behaviour for each kind of process
whatever leg runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from celeriac import AsyncResult, Celeriac
from celeriac.backends import ResultRecord
from celeriac.blocking import set_offloader
from celeriac.brokers import Broker, OutgoingMessage, broker_from_url
from celeriac.states import SUCCESS

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Seconds the helper process holds the SQLite write lock.
HOLD = 1.0

#: Hold the write lock of the database in argv[1] for argv[2] seconds; if argv[3] is
#: given, store that result row inside the held transaction (visible at COMMIT).
HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
if len(sys.argv) > 3:
    record = sys.argv[3]
    import json
    conn.execute("INSERT INTO results (task_id, status, payload) VALUES (?, ?, ?)",
                 (json.loads(record)["task_id"], "SUCCESS", record))
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


class Ticker:
    """A thread (a greenlet when patched) that notes the longest gap between its ticks.

    If the thread running a celeriac call blocks the hub, no greenlet runs, so the
    gap grows to the length of the block.
    """

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.longest_gap = 0.0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop:
            time.sleep(self.period)
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now

    def __enter__(self) -> Ticker:
        self._thread.start()
        time.sleep(self.period * 3)  # let it tick before the call under test starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(5)


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Celeriac]:
    url = f"sqlite:///{tmp_path / 'celeriac.db'}"
    setup = Celeriac("setup", broker=url, backend=url)
    setup.broker.ping()  # create the tables (and WAL mode) before anyone holds the lock
    setup.backend.ping()
    setup.close()
    app = Celeriac("client", broker=url, backend=url)  # opens its connections on first use
    yield app
    app.close()


@contextmanager
def write_lock_held(app: Celeriac, *extra: str) -> Iterator[None]:
    """A process holds the write lock of ``app``'s database for HOLD seconds from entry."""
    path = app.conf.broker_url.removeprefix("sqlite:///")
    with subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, path, str(HOLD), *extra],
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield
    assert holder.returncode == 0


def _send(app: Celeriac) -> Callable[[], object]:
    return lambda: app.send_task("tasks.add", (2, 3))


def _store(app: Celeriac) -> Callable[[], object]:
    record = ResultRecord(task_id=uuid.uuid4().hex, status=SUCCESS, result=1)
    return lambda: app.backend.store(record)


@pytest.mark.parametrize("operation", [_send, _store], ids=["send_task", "store"])
def test_a_call_waiting_for_the_write_lock_lets_other_threads_run(
        sqlite_app: Celeriac, operation: Callable[[Celeriac], Callable[[], object]]) -> None:
    """A worker holding the SQLite write lock must not freeze the rest of a green client."""
    call = operation(sqlite_app)
    with write_lock_held(sqlite_app), Ticker() as ticker:
        start = time.monotonic()
        call()
        waited = time.monotonic() - start
    assert waited >= HOLD / 2, "the call did not wait for the lock: the test proves nothing"
    assert ticker.longest_gap < HOLD / 2, (
        f"other threads stood still for {ticker.longest_gap:.2f}s while one waited on SQLite")


def test_get_waiting_on_a_locked_database_lets_other_threads_run(sqlite_app: Celeriac) -> None:
    """``AsyncResult.get()`` from a fresh client while a worker holds the lock and stores
    the result: it returns that result, and never stops the other threads meanwhile."""
    task_id = uuid.uuid4().hex
    record = ResultRecord(task_id=task_id, status=SUCCESS, result={"sum": 5})
    with write_lock_held(sqlite_app, record.to_json()), Ticker() as ticker:
        value = AsyncResult(task_id, sqlite_app).get(timeout=HOLD * 10)
    assert value == {"sum": 5}
    assert ticker.longest_gap < HOLD / 2, (
        f"other threads stood still for {ticker.longest_gap:.2f}s during get()")


def test_many_threads_sending_at_once_all_get_through(sqlite_app: Celeriac) -> None:
    """Many concurrent senders (greenlets when patched) and results read back by each."""
    errors: list[BaseException] = []
    ids: list[str] = []

    def client(n: int) -> None:
        try:
            result = sqlite_app.send_task("tasks.add", (n, n))
            sqlite_app.backend.store(ResultRecord(task_id=result.id, status=SUCCESS, result=n))
            assert result.get(timeout=30) == n
            ids.append(result.id)
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(set(ids)) == 40
    assert sqlite_app.broker.stats()["celery"].ready == 40


@pytest.mark.parametrize(("shared", "threads", "rounds"), [(True, 8, 10), (False, 4, 60)],
                         ids=["one-broker", "broker-per-thread"])
def test_threads_opening_a_new_database_at_once_all_succeed(
        tmp_path: Path, shared: bool, threads: int, rounds: int) -> None:
    """The first connections to a new file race to switch it to WAL; none may fail.

    One broker per thread is what separate processes do (nothing in common but the
    file): without a retry, about one round in fifteen failed with "database is
    locked". One shared broker is a client's threads or greenlets.
    """
    def publish(broker: Broker, ready: threading.Barrier, errors: list[BaseException]) -> None:
        ready.wait(10)
        try:
            broker.publish([OutgoingMessage(queue="q", body=b"x")])
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    for round in range(rounds):
        url = f"sqlite:///{tmp_path / f'fresh-{round}.db'}"
        common = broker_from_url(url)
        brokers = [common if shared else broker_from_url(url) for _ in range(threads)]
        errors: list[BaseException] = []
        ready = threading.Barrier(threads)
        started = [threading.Thread(target=publish, args=(b, ready, errors)) for b in brokers]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join(60)
        assert errors == [], f"round {round}: {errors[0]!r}"
        assert common.stats()["q"].ready == threads
        for broker in {id(b): b for b in brokers}.values():
            broker.close()


@pytest.fixture
def one_offload_thread() -> Iterator[None]:
    """Every offloaded call on one thread, hence one SQLite connection for everybody.

    That is what a green process can get from its hub's pool at any time: the
    thread answering a wait may be the one that just ran another greenlet's write.
    """
    executor = ThreadPoolExecutor(max_workers=1)
    set_offloader(lambda fn, *args: executor.submit(fn, *args).result())
    yield
    set_offloader(None)
    executor.shutdown()


@pytest.mark.usefixtures("one_offload_thread")
def test_a_waiting_fetch_sees_a_publish_made_on_its_own_connection(tmp_path: Path) -> None:
    """``PRAGMA data_version`` ignores the connection's own commits."""
    broker = broker_from_url(f"sqlite:///{tmp_path / 'celeriac.db'}", poll_interval=0.01)
    publisher = threading.Thread(target=lambda: (time.sleep(0.2), broker.publish(
        [OutgoingMessage(queue="q", body=b"late")])))
    publisher.start()
    start = time.monotonic()
    got = broker.fetch(["q"], 1, consumer="c", lease=30, timeout=5)
    elapsed = time.monotonic() - start
    publisher.join(5)
    assert [d.body for d in got] == [b"late"], "the publish never woke the waiting fetch"
    assert elapsed < 3
    broker.close()


@pytest.mark.usefixtures("one_offload_thread")
def test_a_waiting_get_sees_a_result_stored_on_its_own_connection(sqlite_app: Celeriac) -> None:
    task_id = uuid.uuid4().hex
    record = ResultRecord(task_id=task_id, status=SUCCESS, result="late")
    storer = threading.Thread(target=lambda: (time.sleep(0.2), sqlite_app.backend.store(record)))
    storer.start()
    start = time.monotonic()
    value = AsyncResult(task_id, sqlite_app).get(timeout=5)
    storer.join(5)
    assert value == "late"
    assert time.monotonic() - start < 3


# -- which thread runs an offloaded call, per kind of process ------------------------------

#: Prints, as JSON, facts about offload() in a process patched by argv[1] (or not).
PROBE = """
import json, sys
kind = sys.argv[1]
if kind == "gevent":
    from gevent import monkey
    monkey.patch_all()
elif kind == "eventlet":
    import warnings
    warnings.filterwarnings("ignore")
    import eventlet
    eventlet.monkey_patch()

import threading, time
from celeriac.blocking import offload

if kind == "gevent":
    from gevent.monkey import get_original
elif kind == "eventlet":
    from eventlet.patcher import original
    get_original = lambda module, name: getattr(original(module), name)
else:
    get_original = lambda module, name: getattr(__import__(module), name)
native_ident = get_original("_thread", "get_ident")

main = native_ident()
facts = {"main": main, "before_hub": offload(native_ident)}
time.sleep(0.001)  # patched: the hub exists from now on
facts["offloaded"] = offload(native_ident)
# Many green threads at once share a few OS threads (and so a few SQLite connections).
seen = set()
threads = [threading.Thread(target=lambda: seen.add(offload(native_ident))) for _ in range(50)]
for t in threads:
    t.start()
for t in threads:
    t.join()
facts["distinct"] = len(seen)
facts["nested"] = offload(lambda: offload(native_ident) == native_ident())

# A burst of green threads on a new SQLite file: its first connections open at once
# on the pool's threads, and share the (native) lock that sets the file up.
from celeriac.brokers import OutgoingMessage, broker_from_url
broker = broker_from_url("sqlite:///" + sys.argv[2])
threads = [threading.Thread(target=broker.publish, args=([OutgoingMessage("q", b"x")],))
           for _ in range(100)]
for t in threads:
    t.start()
for t in threads:
    t.join()
facts["published"] = broker.stats()["q"].ready
print(json.dumps(facts))
"""


def probe(kind: str, tmp_path: Path) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", PROBE, kind, str(tmp_path / "probe.db")],
                          cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    facts: dict[str, int] = json.loads(proc.stdout)
    return facts


def test_offload_calls_directly_in_an_ordinary_process(tmp_path: Path) -> None:
    facts = probe("plain", tmp_path)
    assert facts["offloaded"] == facts["before_hub"] == facts["main"]
    assert facts["nested"]
    assert facts["published"] == 100


@pytest.mark.parametrize("kind", ["gevent", "eventlet"])
def test_offload_leaves_the_hub_in_a_patched_process(kind: str, tmp_path: Path) -> None:
    """Patched, but no green pool: calls go to the hub's native thread pool by themselves."""
    facts = probe(kind, tmp_path)
    assert facts["offloaded"] != facts["main"], "a blocking call ran on the hub's thread"
    assert 1 <= facts["distinct"] <= 20, "each green thread got its own OS thread"
    assert facts["nested"], "an offloaded call that offloads again must run in place"
    if kind == "gevent":  # before gevent has a hub no greenlet can wait: nothing to move
        assert facts["before_hub"] == facts["main"]
    assert facts["published"] == 100
