"""Rate and concurrency limits in the worker, in-process on a real memory broker: the
executor defers a run over its limit back to the broker (uncharged, never dead-lettered
for it), consumers sharing a broker share its limits, ``worker_disable_rate_limits``
and run-time limits (``control rate_limit``, the command pipe) change what is enforced,
and a task without a limit costs no broker call."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_until
from test_worker_core import QUEUE, Rig, claim, counts, make_rig, publish

from celeriac import Celeriac
from celeriac.brokers.memory import MemoryBroker
from celeriac.exceptions import ConfigurationError
from celeriac.middleware import DEFER, Pipeline
from celeriac.middleware.commands import CommandListener
from celeriac.middleware.limits import Limits
from celeriac.pools.threads import ThreadPool
from celeriac.worker.commands import SetRateLimit
from celeriac.worker.executor import Executor
from celeriac.worker.settle import Settler


@pytest.fixture
def app() -> Iterator[Celeriac]:
    app = Celeriac("core", broker="memory://", backend="memory://")
    app.conf.broker_max_deliveries = 2
    yield app
    app.close()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


def limits_of(app: Celeriac) -> Limits:
    limits = Limits(app, app.broker, 30.0)
    limits.process_started(app)
    return limits


def most_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


# -- the executor and the settler -------------------------------------------------------
def test_a_run_over_its_rate_goes_back_to_the_broker_uncharged(app: Celeriac) -> None:
    ran: list[int] = []

    @app.task(name="t.slow", rate_limit="2/s")
    def slow(i: int) -> None:
        ran.append(i)

    executor = Executor(app, ThreadPool(1, app.conf), Pipeline([limits_of(app)]), lambda d: None)
    publish(app, "t.slow", 1)
    publish(app, "t.slow", 2)
    first, second = claim(app, 2)
    assert executor.handle(first).action != DEFER
    outcome = executor.handle(second)
    assert (outcome.action, ran) == (DEFER, [1])
    assert 0.3 < outcome.delay <= 0.5
    Settler(app.broker, Pipeline()).settle([(second, outcome)])
    assert counts(app)["scheduled"] == 1
    [again] = wait_until(lambda: app.broker.fetch([QUEUE], 1, consumer="c", lease=30),
                         timeout=5, message="the deferred message")
    # Deferring did not count as a delivery: max_deliveries=2 is not used up by it.
    assert (again.id, again.delivery_count) == (second.id, 1)
    assert executor.handle(again).action != DEFER and ran == [1, 2]


def test_rate_limited_tasks_are_spread_out_and_none_is_dead_lettered(
        app: Celeriac, rigs: list[Rig]) -> None:
    started: list[float] = []

    @app.task(name="t.limited", rate_limit="10/s")
    def limited() -> None:
        started.append(time.time())

    # Two consumers on one broker, as two nodes: the limit is theirs together.
    for _ in range(2):
        make_rig(rigs, app, concurrency=4, prefetch=8)
    ids = [publish(app, "t.limited") for _ in range(15)]
    for rig in rigs:
        rig.start()
    for task_id in ids:
        app.AsyncResult(task_id).get(timeout=30)
    assert len(started) == 15
    assert most_in_any_second(started) <= 11  # 10/s, plus the one run a burst of 1 allows
    assert max(started) - min(started) >= 1.2
    assert counts(app)["dead"] == 0


def test_concurrency_limit_holds_across_consumers_and_frees_its_slots(
        app: Celeriac, rigs: list[Rig]) -> None:
    lock = threading.Lock()
    running: list[int] = [0]
    peak: list[int] = [0]

    @app.task(name="t.fragile", concurrency_limit=2)
    def fragile() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1

    for _ in range(2):
        make_rig(rigs, app, concurrency=3, prefetch=6)
    ids = [publish(app, "t.fragile") for _ in range(6)]
    for rig in rigs:
        rig.start()
    for task_id in ids:
        app.AsyncResult(task_id).get(timeout=30)
    assert peak[0] == 2
    assert app.broker.slots_in_use("t.fragile") == 0
    assert counts(app)["dead"] == 0


def test_a_running_task_renews_its_slot_past_the_lease(app: Celeriac, rigs: list[Rig]) -> None:
    """A slot lives one lease unless renewed: a run longer than the lease keeps it."""
    app.conf.broker_lease_timeout = 0.6
    spans: list[tuple[float, float]] = []

    @app.task(name="t.long", concurrency_limit=1)
    def long() -> None:
        start = time.time()
        time.sleep(1.5)
        spans.append((start, time.time()))

    make_rig(rigs, app, concurrency=2, prefetch=2)
    ids = [publish(app, "t.long") for _ in range(2)]
    rigs[0].start()
    for task_id in ids:
        app.AsyncResult(task_id).get(timeout=30)
    (_, first_end), (second_start, _) = sorted(spans)
    assert second_start >= first_end  # never both at once, though each ran 2.5 leases


# -- what is enforced -------------------------------------------------------------------
def test_a_task_without_a_limit_costs_a_lookup_and_no_broker_call(app: Celeriac) -> None:
    @app.task(name="t.free")
    def free() -> None: ...

    @app.task(name="t.limited", rate_limit="1/s")
    def limited() -> None: ...

    class Counting(MemoryBroker):
        """A real memory broker that counts the limit calls made to it."""

        calls = 0

        def take_rate_token(self, task: str, rate: float, burst: int, ticket: str) -> float:
            Counting.calls += 1
            return super().take_rate_token(task, rate, burst, ticket)

    limits = Limits(app, Counting(), 30.0)
    executor = Executor(app, ThreadPool(1, app.conf), Pipeline([limits]), lambda d: None)
    publish(app, "t.free")
    publish(app, "t.limited")
    free_delivery, limited_delivery = claim(app, 2)
    assert executor.handle(free_delivery).action != DEFER
    assert Counting.calls == 0
    executor.handle(limited_delivery)
    assert Counting.calls == 1  # the counting is live: a limited task is counted


def test_defaults_disable_switch_and_run_time_limits(app: Celeriac) -> None:
    @app.task(name="t.own", rate_limit="5/s")
    def own() -> None: ...

    @app.task(name="t.free", concurrency_limit=3)
    def free() -> None: ...

    limits = limits_of(app)
    assert {n: (lim.rate, lim.concurrency) for n, lim in limits.limited.items()} == {
        "t.own": (5.0, None), "t.free": (None, 3)}
    app.conf.task_default_rate_limit = "60/m"
    assert limits_of(app).limited["t.free"].rate == 1.0
    # A run-time limit in the broker wins over the task's own, in a process started later
    # and, down the command pipe, in one already running; "0" lifts the limit.
    app.conf.task_default_rate_limit = None
    app.broker.set_rate_limit("t.own", "100/s")
    assert limits_of(app).limited["t.own"].rate == 100.0
    limits.set_rate("t.own", "0")
    assert "t.own" not in limits.limited
    app.conf.worker_disable_rate_limits = True
    assert {n: lim.rate for n, lim in limits_of(app).limited.items()} == {"t.free": None}


def test_the_command_pipe_sets_a_rate_limit_in_a_running_process(app: Celeriac,
                                                                rigs: list[Rig]) -> None:
    @app.task(name="t.own", rate_limit="5/s")
    def own() -> None: ...

    rig = make_rig(rigs, app)
    listener: Any = CommandListener.__new__(CommandListener)
    listener.consumer = rig.consumer
    listener.apply(SetRateLimit("t.own", "50/s"))
    limits = rig.consumer.executor.limits
    assert limits is not None and limits.limited["t.own"].rate == 50.0


def test_control_rate_limit_stores_the_limit_in_the_broker(app: Celeriac) -> None:
    app.control.rate_limit("t.x", "7/m")
    app.control.rate_limit("t.y", 0)
    assert app.broker.rate_limits() == {"t.x": "7/m", "t.y": "0"}
    with pytest.raises(ConfigurationError, match="rate_limit="):
        app.control.rate_limit("t.x", "often")
    assert app.broker.rate_limits()["t.x"] == "7/m"
