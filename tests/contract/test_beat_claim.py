"""The beat's broker primitive, on every broker: ``beat_runs`` and ``beat_claim``.

``beat_claim`` is a compare-and-set on an entry's last run that publishes the run's
messages in the same step; highly available beat rests on it (docs/periodic-tasks.md).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.brokers import Broker, OutgoingMessage, broker_from_url
from celeriac.exceptions import ConfigurationError
from contract.test_broker import BROKERS, _make_broker, fetch, new_queue


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    yield from _make_broker(request.param, request, tmp_path)


def entry() -> str:
    return f"entry-{uuid.uuid4().hex[:8]}"


def message(queue: str, body: bytes = b"run", priority: int = 0) -> OutgoingMessage:
    return OutgoingMessage(queue=queue, body=body, priority=priority)


def test_a_claim_stores_the_run_and_publishes_its_messages(broker: Broker) -> None:
    name, queue, t1 = entry(), new_queue(), time.time()
    assert broker.beat_runs([name]) == {}
    assert broker.beat_claim(name, None, t1, [message(queue, b"first")]) is True
    assert broker.beat_runs([name, "other"]) == {name: t1}
    assert [d.body for d in fetch(broker, queue)] == [b"first"]


def test_a_run_is_claimed_once_and_a_stale_previous_is_refused(broker: Broker) -> None:
    name, queue, t1 = entry(), new_queue(), 1_700_000_000.123456
    t2, t3 = t1 + 1, t1 + 2
    assert broker.beat_claim(name, None, t1, [message(queue, b"1")])
    assert not broker.beat_claim(name, None, t1, [message(queue, b"again")])
    assert broker.beat_claim(name, t1, t2, [message(queue, b"2")])
    assert not broker.beat_claim(name, t1, t3, [message(queue, b"stale")])
    assert not broker.beat_claim(name, t1 + 1e-6, t3, [message(queue, b"near")])  # exact compare
    assert broker.beat_runs([name]) == {name: t2}
    assert sorted(d.body for d in fetch(broker, queue)) == [b"1", b"2"]


def test_a_claim_without_messages_records_the_run_only(broker: Broker) -> None:
    name, queue = entry(), new_queue()
    assert broker.beat_claim(name, None, 5.5, [])
    assert broker.beat_runs([name]) == {name: 5.5}
    assert fetch(broker, queue) == []
    assert broker.beat_runs([]) == {}


def test_a_refused_message_records_nothing(broker: Broker) -> None:
    name, queue = entry(), new_queue()
    with pytest.raises(ConfigurationError):
        broker.beat_claim(name, None, 1.0, [message(queue, priority=12)])
    assert broker.beat_runs([name]) == {}
    assert fetch(broker, queue) == []


def test_racing_claims_of_one_run_publish_it_once(broker: Broker) -> None:
    """Eight claimants (each with its own connection where the broker is shared) race
    for each of 20 runs: every run is won once and its message published once."""
    name, queue = entry(), new_queue()
    clients = [broker if not broker.shared_between_processes else
               broker_from_url(broker.url, poll_interval=0.01) for _ in range(8)]
    runs = [1000.0 + i for i in range(20)]
    wins: list[tuple[int, float]] = []
    lock = threading.Lock()

    def claimant(index: int) -> None:
        client = clients[index]
        for run in runs:
            previous = client.beat_runs([name]).get(name)
            if previous is not None and previous >= run:
                continue
            if client.beat_claim(name, previous, run, [message(queue, str(run).encode())]):
                with lock:
                    wins.append((index, run))

    for _ in range(3):  # some runs may be lost to a racing read: try again until done
        threads = [threading.Thread(target=claimant, args=(i,)) for i in range(len(clients))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    bodies = [d.body for d in fetch(broker, queue, count=1000)]
    assert sorted(run for _, run in wins) == sorted(float(b) for b in bodies)
    assert len(bodies) == len(set(bodies))  # no run twice
    assert broker.beat_runs([name]) == {name: runs[-1]}
