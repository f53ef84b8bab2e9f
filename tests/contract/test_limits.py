"""The contract of the brokers' rate and concurrency limits (every broker; the shared
ones also from several real processes at once)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.brokers import Broker
from contract.test_broker import BROKERS, REPO_ROOT, SHARED, _make_broker

#: 10 runs per second: 100 ms apart.
RATE = 10.0
INTERVAL = 1 / RATE


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    yield from _make_broker(request.param, request, tmp_path)


@pytest.fixture(params=SHARED)
def shared_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    yield from _make_broker(request.param, request, tmp_path)


def new_task() -> str:
    return f"t.{uuid.uuid4().hex[:10]}"


# -- rate limits -------------------------------------------------------------------------
def test_runs_past_the_rate_are_reserved_one_interval_apart(broker: Broker) -> None:
    task = new_task()
    before = time.monotonic()
    assert broker.take_rate_token(task, RATE, 1, "a") == 0.0
    second = broker.take_rate_token(task, RATE, 1, "b")
    between = time.monotonic() - before  # at least the time between the two grants
    third = broker.take_rate_token(task, RATE, 1, "c")
    assert INTERVAL - between - 0.01 <= second <= INTERVAL + 0.01 and second > 0
    assert third - second == pytest.approx(INTERVAL, abs=0.03)


def test_a_ticket_runs_at_its_reserved_time_without_taking_another_run(broker: Broker) -> None:
    task = new_task()
    broker.take_rate_token(task, RATE, 1, "a")
    wait = broker.take_rate_token(task, RATE, 1, "b")
    early = broker.take_rate_token(task, RATE, 1, "b")  # too early: still waiting, same time
    assert 0 < early <= wait
    time.sleep(wait + 0.01)
    assert broker.take_rate_token(task, RATE, 1, "b") == 0.0
    # b used its reserved run: c is the next one, an interval after b's, not two.
    assert broker.take_rate_token(task, RATE, 1, "c") <= INTERVAL + 0.01


def test_late_tickets_do_not_run_back_to_back(broker: Broker) -> None:
    """Messages that come back late (they waited behind other ready messages) run an
    interval apart, not all at once: starts never bunch up past the rate."""
    task = new_task()
    broker.take_rate_token(task, RATE, 1, "a")
    broker.take_rate_token(task, RATE, 1, "b")
    broker.take_rate_token(task, RATE, 1, "c")
    time.sleep(0.3)  # both b (due at +0.1) and c (+0.2) are late now
    before = time.monotonic()
    assert broker.take_rate_token(task, RATE, 1, "c") == 0.0
    wait = broker.take_rate_token(task, RATE, 1, "b")
    # b starts an interval after c did, not at once: its wait is the interval less the
    # time between the two calls (a loaded machine, a patched process: tens of ms).
    between = time.monotonic() - before
    assert INTERVAL - between - 0.01 <= wait <= INTERVAL + 0.01 and wait > 0
    time.sleep(wait)
    assert broker.take_rate_token(task, RATE, 1, "b") == 0.0


def test_burst_runs_go_back_to_back_and_tasks_are_independent(broker: Broker) -> None:
    task, other = new_task(), new_task()
    assert [broker.take_rate_token(task, RATE, 3, str(i)) for i in range(3)] == [0.0] * 3
    assert broker.take_rate_token(task, RATE, 3, "x") > 0
    assert broker.take_rate_token(other, RATE, 1, "x") == 0.0


def test_the_rate_refills_after_a_quiet_spell(broker: Broker) -> None:
    task = new_task()
    broker.take_rate_token(task, 20.0, 1, "a")
    time.sleep(0.1)
    assert broker.take_rate_token(task, 20.0, 1, "b") == 0.0


def test_run_time_rate_limits_are_stored(broker: Broker) -> None:
    task = new_task()
    assert task not in broker.rate_limits()
    broker.set_rate_limit(task, "5/s")
    broker.set_rate_limit(task, "7/m")
    assert broker.rate_limits()[task] == "7/m"


# -- concurrency limits ------------------------------------------------------------------
def test_slots_are_limited_kept_by_their_holder_and_released(broker: Broker) -> None:
    task = new_task()
    assert broker.acquire_slot(task, 2, "a", 30)
    assert broker.acquire_slot(task, 2, "b", 30)
    assert not broker.acquire_slot(task, 2, "c", 30)
    assert broker.acquire_slot(task, 2, "a", 30)  # a redelivered message keeps its own
    assert broker.slots_in_use(task) == 2
    broker.release_slot(task, "a")
    assert broker.slots_in_use(task) == 1
    assert broker.acquire_slot(task, 2, "c", 30)
    assert broker.acquire_slot(new_task(), 1, "c", 30)  # per task


def test_slots_expire_unless_renewed(broker: Broker) -> None:
    task = new_task()
    assert broker.acquire_slot(task, 2, "kept", 0.3)
    assert broker.acquire_slot(task, 2, "dead", 0.3)
    time.sleep(0.15)
    broker.renew_slots([(task, "kept")], 5.0)
    time.sleep(0.25)
    assert broker.slots_in_use(task) == 1
    assert broker.acquire_slot(task, 2, "new", 30)  # the dead holder's slot came back
    assert not broker.acquire_slot(task, 2, "more", 30)


# -- several processes at once -----------------------------------------------------------
CHILD = """
import json, sys, time
from celeriac.brokers import broker_from_url
broker = broker_from_url(sys.argv[1])
task, kind, me = sys.argv[2], sys.argv[3], sys.argv[4]
print("ready", flush=True)
sys.stdin.readline()
if kind == "slots":
    got = [broker.acquire_slot(task, 3, f"{me}-{i}", 30) for i in range(5)]
else:
    got = []
    for i in range(5):
        before = time.time()
        delay = broker.take_rate_token(task, 10.0, 1, f"{me}-{i}")
        got.append([before + delay, time.time() + delay])
print(json.dumps(got), flush=True)
"""


def _from_processes(broker: Broker, kind: str, count: int = 4) -> list[object]:
    task = new_task()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, broker.url, task, kind, str(n)],
                                 cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for n in range(count)]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:  # all at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results: list[object] = []
        for child in children:
            assert child.stdout is not None
            results += json.loads(child.stdout.readline())
        return results
    finally:
        for child in children:
            assert child.wait(30) == 0


def test_slots_taken_from_several_processes_never_exceed_the_limit(shared_broker: Broker) -> None:
    got = _from_processes(shared_broker, "slots")
    assert got.count(True) == 3 and len(got) == 20


def test_runs_reserved_from_several_processes_are_an_interval_apart(
        shared_broker: Broker) -> None:
    """No two runs share a slot of time. Each child knows its slot only to within its
    call's round trip (the broker reserved it at some moment between the child's clock
    readings before and after the call), so each slot is an interval [earliest, latest]:
    a later slot's latest is at least an interval after an earlier slot's earliest however
    slowly a loaded machine answers; two runs given one slot would be only a round trip
    apart."""
    slots = sorted((float(low), float(high))  # type: ignore[arg-type]
                   for low, high in _from_processes(shared_broker, "rate"))  # type: ignore[misc]
    assert len(slots) == 20
    slots.sort(key=lambda slot: (slot[0] + slot[1]) / 2)
    for (earlier, _), (_, later) in itertools.pairwise(slots):
        assert later - earlier >= INTERVAL - 0.02, slots
    assert slots[-1][1] - slots[0][0] >= 19 * INTERVAL - 0.02, slots
