"""The contract every broker must meet.

Each test runs once per broker in ``broker``'s params and only uses the public
:class:`~celeriac.brokers.Broker` interface, so a new transport joins by adding a
param (and, if it needs a server, skipping when none is available). Queue names
are random, so brokers on a shared server do not see each other's messages.
Timing tests use short leases (0.2 s) and generous upper bounds: they must fail
when a lease or a wake-up is ignored, not when the machine is busy.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from celeriac.brokers import (
    Broker,
    ControlCommand,
    Delivery,
    OutgoingMessage,
    QueueStats,
    Revocation,
    WorkerEvent,
    broker_from_url,
)
from celeriac.exceptions import BrokerUnreachable, ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The fixture's broker gives up on a message after this many deliveries.
MAX_DELIVERIES = 3
LEASE = 0.2
#: Comfortably past LEASE, for "the lease has run out by now".
AFTER_LEASE = 0.3
LONG = 30.0


#: Every broker; SHARED are those that separate processes can share.
BROKERS = ["memory", "sqlite", "redis", "amqp"]
SHARED = ["sqlite", "redis", "amqp"]


def _amqp_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A vhost of this test's own on the session's RabbitMQ node, with a SQLite state store
    (so the AMQP broker's contract runs without Redis)."""
    base = str(request.getfixturevalue("amqp_url"))
    state = f"sqlite:///{tmp_path / 'state.db'}"
    return f"{base}?state_url={quote(state, safe='')}"


def _make_broker(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    urls = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / 'broker.db'}",
        # Asked for only here, so memory and sqlite runs start no server; the URL has a
        # key prefix of this test's own on the session's redis-server.
        "redis": lambda: str(request.getfixturevalue("redis_url")),
        "amqp": lambda: _amqp_url(request, tmp_path),
    }
    instance = broker_from_url(urls[kind](), max_deliveries=MAX_DELIVERIES, poll_interval=0.01)
    instance.ping()
    yield instance
    instance.close()


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    yield from _make_broker(request.param, request, tmp_path)


@pytest.fixture(params=SHARED)
def shared_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    instance = next(_make_broker(request.param, request, tmp_path))
    assert instance.shared_between_processes
    yield instance
    instance.close()


def new_queue() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def publish(broker: Broker, queue: str, *bodies: bytes, priority: int = 0,
            eta: float | None = None) -> list[str]:
    return broker.publish([OutgoingMessage(queue=queue, body=body, priority=priority, eta=eta)
                           for body in bodies])


def fetch(broker: Broker, *queues: str, count: int = 10, consumer: str = "c1",
          lease: float = LONG, timeout: float = 0.0) -> list[Delivery]:
    return broker.fetch(list(queues), count, consumer=consumer, lease=lease, timeout=timeout)


def fetch_one_by_one(broker: Broker, *queues: str) -> list[bytes]:
    """Bodies in the order single-message fetches hand them out, until none is left."""
    bodies = []
    while got := fetch(broker, *queues, count=1):
        bodies.append(got[0].body)
    return bodies


def stats_of(broker: Broker, queue: str) -> QueueStats:
    return broker.stats().get(queue, QueueStats())


def later(delay: float, action: Callable[[], object]) -> threading.Thread:
    """Run ``action`` on another thread after ``delay`` seconds."""
    def run() -> None:
        time.sleep(delay)
        action()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- publish / fetch / ack -----------------------------------------------------------


def test_round_trip_keeps_body_bytes(broker: Broker) -> None:
    queue = new_queue()
    bodies = [b"", b"\x00\xff\x80 binary\n", "çélériac ☃".encode(), bytes(range(256)) * 40]
    ids = publish(broker, queue, *bodies)
    assert len(ids) == len(bodies) and len(set(ids)) == len(bodies)
    assert all(isinstance(i, str) for i in ids)
    got = fetch(broker, queue)
    assert [d.body for d in got] == bodies
    assert [d.id for d in got] == ids
    assert all(d.queue == queue and d.delivery_count == 1 for d in got)
    assert broker.ack(got) == [True] * len(bodies)
    assert fetch(broker, queue) == []
    assert broker.ack(got[:1]) == [False]  # already gone


def test_a_claim_keeps_a_queue_name_of_any_text_with_its_fields(broker: Broker) -> None:
    """A queue named with spaces, separators and non-ASCII text comes back whole with each
    message's id, priority, count and token (Redis packs them into one string per
    message of the claim's reply)."""
    queue = f"{new_queue()} caf\u00e9 | 1 2 \u2603"
    ids = publish(broker, queue, b"a", priority=7) + publish(broker, queue, b"b", priority=0)
    got = fetch(broker, queue)
    assert [(d.id, d.queue, d.body, d.priority, d.delivery_count) for d in got] == [
        (ids[0], queue, b"a", 7, 1), (ids[1], queue, b"b", 0, 1)]
    assert broker.ack(got) == [True, True]  # the tokens came back right too


def test_publish_chunks_stores_every_chunk_in_order(broker: Broker) -> None:
    """A bulk send: more chunks than one call takes, one past the Redis script's 1,000,
    mixed queues, priorities and a scheduled message; all stored once, in order."""
    queue, other = new_queue(), new_queue()
    first = [OutgoingMessage(queue=queue, body=b"a%d" % i) for i in range(1_500)]
    second = [OutgoingMessage(queue=other, body=b"urgent", priority=9),
              OutgoingMessage(queue=queue, body=b"later", eta=time.time() + LONG)]
    third = [OutgoingMessage(queue=queue, body=b"c%d" % i) for i in range(700)]
    broker.publish_chunks([first, second, [], third])
    assert fetch_one_by_one(broker, other) == [b"urgent"]
    expected = [m.body for m in first + third]
    assert fetch_one_by_one(broker, queue) == expected
    assert stats_of(broker, queue).scheduled == 1


def test_publish_chunks_refuses_a_bad_priority_before_storing_anything(broker: Broker) -> None:
    queue = new_queue()
    good = [OutgoingMessage(queue=queue, body=b"ok")] * 3
    with pytest.raises(ConfigurationError, match="priority"):
        broker.publish_chunks([good, [OutgoingMessage(queue=queue, body=b"bad", priority=10)]])
    assert fetch(broker, queue) == []


def test_publish_nothing_and_fetch_nothing(broker: Broker) -> None:
    assert broker.publish([]) == []
    assert fetch(broker, new_queue()) == []
    assert fetch(broker, count=5) == []


def test_fetch_claims_at_most_count(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, *(b"%d" % i for i in range(5)))
    # RabbitMQ pushes deliveries to its consumer as they come: a fetch may see fewer than
    # are queued, never more than asked for, and in order.
    batches = []
    while sum(len(batch) for batch in batches) < 5:
        batches.append([d.body for d in fetch(broker, queue, count=3, timeout=5)])
        assert 1 <= len(batches[-1]) <= 3, batches
    assert [body for batch in batches for body in batch] == [b"%d" % i for i in range(5)]
    assert fetch(broker, queue, count=3) == []
    if not broker.url.startswith("amqp"):  # the others hand out all that is queued
        assert batches == [[b"0", b"1", b"2"], [b"3", b"4"]]


def test_priority_orders_highest_first(broker: Broker) -> None:
    queue = new_queue()
    for priority in (0, 5, 9, 3, 9):
        publish(broker, queue, b"p%d" % priority, priority=priority)
    got = fetch(broker, queue)
    assert [d.body for d in got] == [b"p9", b"p9", b"p5", b"p3", b"p0"]
    assert [d.priority for d in got] == [9, 9, 5, 3, 0]
    broker.requeue(got)
    assert fetch_one_by_one(broker, queue) == [b"p9", b"p9", b"p5", b"p3", b"p0"]


def test_fifo_within_a_priority(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"a", b"b", b"c")
    publish(broker, queue, b"d")
    publish(broker, queue, b"e")
    publish(broker, queue, b"high", priority=1)
    assert fetch_one_by_one(broker, queue) == [b"high", b"a", b"b", b"c", b"d", b"e"]


def test_out_of_range_priority_is_refused_and_nothing_is_stored(broker: Broker) -> None:
    queue = new_queue()
    with pytest.raises(ConfigurationError, match="priority"):
        broker.publish([OutgoingMessage(queue, b"ok"), OutgoingMessage(queue, b"bad", priority=10)])
    with pytest.raises(ConfigurationError):
        broker.publish([OutgoingMessage(queue, b"bad", priority=-1)])
    assert fetch(broker, queue) == []


def test_several_queues_are_served_oldest_first(broker: Broker) -> None:
    q1, q2, q3 = new_queue(), new_queue(), new_queue()
    for queue, body in [(q1, b"1"), (q2, b"2"), (q3, b"3"), (q2, b"4"), (q1, b"5"), (q3, b"6")]:
        publish(broker, queue, body)
    assert [d.body for d in fetch(broker, q3, q1, q2, count=4)] == [b"1", b"2", b"3", b"4"]
    assert fetch_one_by_one(broker, q2, q3, q1) == [b"5", b"6"]


def test_other_queues_are_not_touched(broker: Broker) -> None:
    mine, other = new_queue(), new_queue()
    publish(broker, other, b"not mine")
    assert fetch(broker, mine) == []
    assert stats_of(broker, other).ready == 1


# -- eta -----------------------------------------------------------------------------


def test_eta_message_is_invisible_until_due(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"later", eta=time.time() + 0.3)
    publish(broker, queue, b"now")
    assert [d.body for d in fetch(broker, queue)] == [b"now"]
    assert fetch(broker, queue) == []
    assert stats_of(broker, queue).scheduled == 1
    assert stats_of(broker, queue).ready == 0
    time.sleep(0.35)
    # Once due it becomes ready; RabbitMQ moves it through its delay queues, which took
    # more than the 50 ms after the eta this allowed on a loaded machine.
    deadline = time.monotonic() + 5
    while stats_of(broker, queue).ready != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats_of(broker, queue).ready == 1
    assert [d.body for d in fetch(broker, queue)] == [b"later"]


def test_eta_in_the_past_is_ready_at_once(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"overdue", eta=time.time() - 60)
    assert [d.body for d in fetch(broker, queue)] == [b"overdue"]


def test_waiting_fetch_wakes_when_an_eta_comes_due(broker: Broker) -> None:
    queue = new_queue()
    due = time.time() + 0.3
    publish(broker, queue, b"soon", eta=due)
    started = time.monotonic()
    got = fetch(broker, queue, timeout=5)
    arrived = time.time()
    assert [d.body for d in got] == [b"soon"]
    # Not before its eta (counted from before the publish, which may itself take a while:
    # a confirmed publish on a loaded machine), and long before the fetch's timeout.
    assert arrived >= due - 0.02, f"fetched {due - arrived:.3f}s before its eta"
    assert time.monotonic() - started < 2.5


# -- leases and fencing tokens ---------------------------------------------------------


def test_expired_lease_makes_message_claimable_with_new_token(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"job")
    [first] = fetch(broker, queue, consumer="c1", lease=LEASE)
    assert fetch(broker, queue, consumer="c2") == []
    assert stats_of(broker, queue).in_flight == 1
    time.sleep(AFTER_LEASE)
    [second] = fetch(broker, queue, consumer="c2")
    assert second.id == first.id and second.body == b"job"
    assert second.delivery_count == 2
    assert second.token != first.token
    assert broker.ack([second]) == [True]


def test_waiting_fetch_wakes_when_a_lease_runs_out(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"job")
    fetch(broker, queue, consumer="c1", lease=LEASE)
    started = time.monotonic()
    got = fetch(broker, queue, consumer="c2", timeout=5)
    assert [d.delivery_count for d in got] == [2]
    assert time.monotonic() - started < 2.5


def test_a_batch_settles_its_fresh_tokens_and_flags_each_in_order(broker: Broker) -> None:
    """One settle call over messages with fresh and stale tokens: a flag per message, in
    the order given, and only the fresh ones are settled."""
    queue = new_queue()
    publish(broker, queue, b"stale")
    [stale] = fetch(broker, queue, consumer="c1", lease=LEASE)
    time.sleep(AFTER_LEASE)
    [current] = fetch(broker, queue, consumer="c2")
    for body in (b"a", b"b"):
        publish(broker, queue, body)
    first, second = fetch(broker, queue, consumer="c2", count=2)
    assert broker.renew([first, stale, second], LONG) == [True, False, True]
    assert broker.ack([stale, first, current, stale, second]) == [False, True, True, False,
                                                                   True]
    assert stats_of(broker, queue) == QueueStats()


def test_stale_token_cannot_touch_the_message(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"job")
    [stale] = fetch(broker, queue, consumer="c1", lease=LEASE)
    time.sleep(AFTER_LEASE)
    [current] = fetch(broker, queue, consumer="c2")
    assert broker.ack([stale]) == [False]
    assert broker.renew([stale], LONG) == [False]
    assert broker.requeue([stale]) == [False]
    assert broker.dead_letter([stale], "should not happen") == [False]
    # Nothing happened: still claimed by c2, no dead letter, c2's token still works.
    assert stats_of(broker, queue) == QueueStats(in_flight=1)
    assert broker.dead_letters(queue) == []
    assert fetch(broker, queue, consumer="c3") == []
    assert broker.renew([current], LONG) == [True]
    assert broker.ack([current]) == [True]


def test_results_are_per_delivery(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"a", b"b", b"c")
    a, b, c = fetch(broker, queue)
    assert broker.ack([b]) == [True]
    assert broker.ack([a, b, c, b]) == [True, False, True, False]
    forged = Delivery(id="not-an-id", queue=queue, body=b"", delivery_count=1, token=1)
    assert broker.ack([forged]) == [False]


def test_renew_extends_the_lease(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"slow")
    [held] = fetch(broker, queue, lease=LEASE)
    assert broker.renew([held], 2.0) == [True]
    time.sleep(AFTER_LEASE)  # past the first lease, well within the renewed one
    assert fetch(broker, queue, consumer="c2") == []
    assert stats_of(broker, queue).in_flight == 1
    assert broker.ack([held]) == [True]


def test_renewing_after_expiry_keeps_the_message_if_nobody_took_it(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"slow")
    [held] = fetch(broker, queue, lease=LEASE)
    time.sleep(AFTER_LEASE)
    assert broker.renew([held], LONG) == [True]
    assert fetch(broker, queue, consumer="c2") == []


# -- requeue -----------------------------------------------------------------------------


def test_requeue_at_once_keeps_the_charge(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"job")
    [first] = fetch(broker, queue)
    assert broker.requeue([first]) == [True]
    assert broker.ack([first]) == [False]  # handed back: no longer held
    [second] = fetch(broker, queue)
    assert second.delivery_count == 2


def test_requeue_with_delay_schedules_the_message(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"job")
    [first] = fetch(broker, queue)
    assert broker.requeue([first], delay=0.3) == [True]
    assert fetch(broker, queue) == []
    assert stats_of(broker, queue) == QueueStats(scheduled=1)
    time.sleep(0.35)
    # Due now; RabbitMQ's delay ladder hands it back tens of ms after that (more on a
    # loaded machine): the fetch waits for it.
    [second] = fetch(broker, queue, timeout=5)
    assert second.delivery_count == 2


def test_requeue_with_uncharge_takes_the_delivery_back(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"job")
    for _ in range(MAX_DELIVERIES + 2):  # never started: may go round forever
        [held] = fetch(broker, queue)
        assert held.delivery_count == 1
        assert broker.requeue([held], uncharge=True) == [True]
    assert broker.dead_letters(queue) == []


# -- dead letters ------------------------------------------------------------------------


def test_max_deliveries_moves_message_to_dead_letters(broker: Broker) -> None:
    queue = new_queue()
    [message_id] = publish(broker, queue, b"poison")
    for attempt in range(1, MAX_DELIVERIES + 1):
        [held] = fetch(broker, queue)
        assert held.delivery_count == attempt
        broker.requeue([held])
    before = time.time()
    assert fetch(broker, queue) == []
    [dead] = broker.dead_letters(queue)
    assert (dead.id, dead.queue, dead.body) == (message_id, queue, b"poison")
    assert dead.reason == f"max deliveries ({MAX_DELIVERIES}) exceeded"
    assert dead.delivery_count == MAX_DELIVERIES
    assert before - 1 <= dead.failed_at <= time.time() + 1
    assert stats_of(broker, queue) == QueueStats(dead=1)


def test_a_batch_is_filled_past_a_message_over_its_limit(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"poison")
    for _ in range(MAX_DELIVERIES):
        broker.requeue(fetch(broker, queue))
    publish(broker, queue, b"a", b"b")
    assert [d.body for d in fetch(broker, queue, count=2)] == [b"a", b"b"]
    assert [d.body for d in broker.dead_letters(queue)] == [b"poison"]


def test_expired_leases_count_towards_max_deliveries(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"hangs")
    for _ in range(MAX_DELIVERIES):
        assert len(fetch(broker, queue, lease=0.05)) == 1
        time.sleep(0.1)
    assert fetch(broker, queue) == []
    assert stats_of(broker, queue).dead == 1


def test_dead_letter_keeps_the_reason(broker: Broker) -> None:
    queue, other = new_queue(), new_queue()
    publish(broker, queue, b"first", b"second")
    publish(broker, other, b"elsewhere")
    first, second = fetch(broker, queue)
    assert broker.dead_letter([first], "undecodable") == [True]
    assert broker.dead_letter([second], "rejected") == [True]
    assert broker.ack([first]) == [False]
    assert fetch(broker, queue) == []
    newest_first = broker.dead_letters(queue)
    assert [(d.body, d.reason, d.delivery_count) for d in newest_first] == [
        (b"second", "rejected", 1), (b"first", "undecodable", 1)]
    assert [d.id for d in newest_first] == [second.id, first.id]
    assert [d.body for d in broker.dead_letters(queue, limit=1)] == [b"second"]
    assert broker.dead_letters(other) == []
    assert {d.body for d in broker.dead_letters()} >= {b"first", b"second"}
    assert stats_of(broker, queue) == QueueStats(dead=2)


# -- release_consumer --------------------------------------------------------------------


def test_release_consumer_frees_messages_and_uncharges_unstarted(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"a", b"b", b"c", b"other's")
    a, b, c = fetch(broker, queue, count=3, consumer="dead")
    [others] = fetch(broker, queue, consumer="alive")
    assert broker.release_consumer("dead", started=[b.id]) == 3
    assert stats_of(broker, queue) == QueueStats(ready=3, in_flight=1)
    again = {d.body: d for d in fetch(broker, queue, consumer="new")}
    assert set(again) == {b"a", b"b", b"c"}
    assert again[b"a"].delivery_count == 1
    assert again[b"b"].delivery_count == 2  # started: keeps the charge
    assert again[b"c"].delivery_count == 1
    assert broker.ack([a, b, c]) == [False, False, False]  # the dead consumer's tokens
    assert broker.ack([others]) == [True]
    assert broker.release_consumer("nobody") == 0


def test_release_consumer_marks_suspects_uncharged(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"suspect", b"unstarted", b"charged suspect", b"charged",
            b"other's")
    held = fetch(broker, queue, count=4, consumer="dead")
    [others] = fetch(broker, queue, consumer="alive")
    assert not any(d.suspect for d in [*held, others])  # fresh messages never are
    suspect, _unstarted, charged_suspect, charged = held
    assert broker.release_consumer(
        "dead", started=[charged_suspect.id, charged.id],
        suspects=[suspect.id, charged_suspect.id, others.id]) == 4  # others': not dead's
    again = {d.body: d for d in fetch(broker, queue, consumer="new")}
    assert {body: (d.delivery_count, d.suspect) for body, d in again.items()} == {
        b"suspect": (1, True),  # uncharged, marked
        b"unstarted": (1, False),
        b"charged suspect": (2, True),  # in both: charged and marked
        b"charged": (2, False),
    }
    assert broker.ack(list(again.values())) == [True] * 4
    assert broker.requeue([others]) == [True]  # still held by "alive": the release left it
    [again_others] = fetch(broker, queue, consumer="alive")
    assert (again_others.body, again_others.suspect) == (b"other's", False)
    assert broker.ack([again_others]) == [True]


def test_the_suspect_mark_stays_with_the_message_until_it_is_acked(broker: Broker) -> None:
    queue = new_queue()
    [message_id] = publish(broker, queue, b"job")
    fetch(broker, queue, consumer="dead")
    broker.release_consumer("dead", suspects=[message_id])

    def claim(consumer: str = "c1", lease: float = LONG) -> Delivery:
        [got] = fetch(broker, queue, consumer=consumer, lease=lease)
        assert (got.id, got.suspect) == (message_id, True)
        return got

    assert broker.requeue([claim()]) == [True]
    assert broker.requeue([claim()], delay=0.2, uncharge=True) == [True]
    assert fetch(broker, queue) == []
    time.sleep(AFTER_LEASE)  # the scheduled message comes due
    assert claim().delivery_count == 2
    assert broker.release_consumer("c1") == 1  # a release without suspects keeps the mark
    claim(consumer="c1", lease=LEASE)
    time.sleep(AFTER_LEASE)
    taken_over = claim(consumer="c2")  # re-claimed after the lease ran out
    assert taken_over.delivery_count == 3
    assert broker.ack([taken_over]) == [True]
    assert broker.dead_letters(queue) == []
    publish(broker, queue, b"job")  # the same body again is a new message
    [fresh] = fetch(broker, queue)
    assert fresh.id != message_id and not fresh.suspect and fresh.delivery_count == 1
    assert broker.ack([fresh]) == [True]


def test_a_suspect_mark_carries_its_group_and_only_ever_shrinks(broker: Broker) -> None:
    queue = new_queue()
    [message_id, other_id] = publish(broker, queue, b"job", b"other")
    fetch(broker, queue, count=2, consumer="w0")
    assert broker.release_consumer("w0", suspects=[message_id, other_id], group=25) == 2
    marks = {}
    for consumer, group in [("w1", 12), ("w2", 40), ("w3", 0), ("w4", 1)]:
        got = fetch(broker, queue, count=2, consumer=consumer)
        marks[consumer] = {d.body: d.suspect for d in got}
        # A crash in a smaller group halves it; a bigger one (another node's view) does
        # not undo that; 0 is read as 1 (alone).
        broker.release_consumer(consumer, suspects=[message_id], group=group)
    assert marks == {"w1": {b"job": 25, b"other": 25}, "w2": {b"job": 12, b"other": 25},
                     "w3": {b"job": 12, b"other": 25}, "w4": {b"job": 1, b"other": 25}}
    [job, other] = sorted(fetch(broker, queue, count=2, consumer="w5"), key=lambda d: d.body)
    assert (job.suspect, other.suspect) == (1, 25)
    # Not alone when it went over: the dead-letter reason does not call it a crasher.
    for attempt in range(6, 6 + MAX_DELIVERIES):
        broker.release_consumer(f"w{attempt - 1}", started=[other_id])
        fetch(broker, queue, count=2, consumer=f"w{attempt}")
    dead = {d.body: d.reason for d in broker.dead_letters(queue)}
    assert dead[b"other"] == f"max deliveries ({MAX_DELIVERIES}) exceeded"


def test_a_suspect_at_max_deliveries_is_dead_lettered_as_a_crasher(broker: Broker) -> None:
    queue = new_queue()
    poison_id, plain_id = publish(broker, queue, b"poison", b"plain")
    fetch(broker, queue, consumer="w0")
    broker.release_consumer("w0", suspects=[poison_id])
    for attempt in range(1, MAX_DELIVERIES + 1):
        got = {d.body: d for d in fetch(broker, queue, consumer=f"w{attempt}")}
        assert {body: (d.delivery_count, d.suspect) for body, d in got.items()} == {
            b"poison": (attempt, True), b"plain": (attempt, False)}
        # Each run crashed its process and is charged; the mark stays as it was.
        broker.release_consumer(f"w{attempt}", started=[poison_id, plain_id])
    assert fetch(broker, queue) == []
    dead = {d.body: d for d in broker.dead_letters(queue)}
    assert {body: (d.reason, d.delivery_count) for body, d in dead.items()} == {
        b"poison": (f"max deliveries ({MAX_DELIVERIES}) exceeded; it crashed its worker"
                    " process while running alone", MAX_DELIVERIES),
        b"plain": (f"max deliveries ({MAX_DELIVERIES}) exceeded", MAX_DELIVERIES),
    }
    assert stats_of(broker, queue) == QueueStats(dead=2)


# -- purge and stats ---------------------------------------------------------------------


def test_purge_one_queue_spares_in_flight_and_other_queues(broker: Broker) -> None:
    queue, other = new_queue(), new_queue()
    publish(broker, queue, b"held")
    [held] = fetch(broker, queue)
    publish(broker, queue, b"ready 1", b"ready 2")
    publish(broker, queue, b"scheduled", eta=time.time() + LONG)
    publish(broker, other, b"other")
    assert broker.purge(queue) == 3
    assert stats_of(broker, queue) == QueueStats(in_flight=1)
    assert stats_of(broker, other) == QueueStats(ready=1)
    assert broker.ack([held]) == [True]


def test_purge_everything(broker: Broker) -> None:
    q1, q2 = new_queue(), new_queue()
    publish(broker, q1, b"1", b"2")
    publish(broker, q2, b"3", eta=time.time() + LONG)
    [held] = fetch(broker, q1, count=1)
    assert broker.purge() == 2
    assert fetch(broker, q1, q2) == []
    assert stats_of(broker, q1) == QueueStats(in_flight=1)
    assert stats_of(broker, q2) == QueueStats()
    assert broker.ack([held]) == [True]


def test_stats_count_every_state(broker: Broker) -> None:
    queue, drained = new_queue(), new_queue()
    publish(broker, queue, b"1", b"2", b"3", b"4", b"5")
    publish(broker, queue, b"scheduled", eta=time.time() + LONG)
    f1, f2, doomed = fetch(broker, queue, count=3)
    broker.dead_letter([doomed], "bad")
    publish(broker, drained, b"x")
    broker.ack(fetch(broker, drained))
    stats = broker.stats()
    assert stats[queue] == QueueStats(ready=2, scheduled=1, in_flight=2, dead=1)
    assert stats[queue].as_dict() == {"ready": 2, "scheduled": 1, "in_flight": 2, "dead": 1}
    assert stats[drained] == QueueStats()  # had messages: still listed
    assert broker.ack([f1, f2]) == [True, True]


# -- workers -----------------------------------------------------------------------------


def test_heartbeats_expire_and_can_be_forgotten(broker: Broker) -> None:
    short, steady = f"w-{uuid.uuid4().hex[:8]}", f"w-{uuid.uuid4().hex[:8]}"
    before = time.time()
    broker.heartbeat(short, {"pid": 1, "queues": ["a", "b"]}, ttl=LEASE)
    broker.heartbeat(steady, {"pid": 2}, ttl=LONG)
    seen = {w.name: w for w in broker.workers()}
    assert seen[short].info == {"pid": 1, "queues": ["a", "b"]}
    assert before - 1 <= seen[short].last_seen <= time.time() + 1
    broker.heartbeat(steady, {"pid": 2, "active": 7}, ttl=LONG)
    time.sleep(AFTER_LEASE)
    seen = {w.name: w for w in broker.workers()}
    assert short not in seen
    assert seen[steady].info == {"pid": 2, "active": 7}
    broker.forget_worker(steady)
    assert steady not in {w.name for w in broker.workers()}
    broker.forget_worker("never-seen")  # no error


def test_expired_heartbeats_are_reaped_once_with_their_info(broker: Broker) -> None:
    dead, alive = f"w-{uuid.uuid4().hex[:8]}", f"w-{uuid.uuid4().hex[:8]}"
    broker.heartbeat(dead, {"pid": 1, "consumers": {"c1": [["d1", "t1", "add", 1, False]]}},
                     ttl=LEASE)
    broker.heartbeat(alive, {"pid": 2}, ttl=LONG)
    assert dead not in {w.name for w in broker.reap_workers()}  # not expired yet
    time.sleep(AFTER_LEASE)
    assert dead not in {w.name for w in broker.workers()}  # expired: not live...
    reaped = {w.name: w for w in broker.reap_workers()}  # ...but kept until reaped
    assert reaped[dead].info == {"pid": 1, "consumers": {"c1": [["d1", "t1", "add", 1, False]]}}
    assert reaped[dead].last_seen > 0
    assert alive not in reaped
    assert dead not in {w.name for w in broker.reap_workers()}  # returned once only
    assert alive in {w.name for w in broker.workers()}
    broker.forget_worker(alive)


def test_concurrent_reapers_each_get_a_dead_worker_once(broker: Broker) -> None:
    names = [f"w-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    for name in names:
        broker.heartbeat(name, {"pid": 1}, ttl=LEASE)
    time.sleep(AFTER_LEASE)
    got: list[list[str]] = [[] for _ in range(4)]

    def reap(slot: int) -> None:
        for _ in range(5):
            got[slot].extend(w.name for w in broker.reap_workers())

    threads = [threading.Thread(target=reap, args=(slot,)) for slot in range(len(got))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    mine = [name for of_one in got for name in of_one if name in names]
    assert sorted(mine) == sorted(names)  # each exactly once


# -- worker events -------------------------------------------------------------------------


def event(kind: str, n: int, worker: str = "w1") -> WorkerEvent:
    return WorkerEvent(type=kind, worker=worker, data={"n": n}, time=1000.0 + n)


def test_events_round_trip_in_order_with_increasing_seq(broker: Broker) -> None:
    assert broker.events() == []
    broker.emit([])
    broker.emit([WorkerEvent(type="task-blocked", worker="node-a", time=123.5,
                             data={"task": "t.hog", "id": "abc", "pid": 7,
                                   "stack": "line 1\nline 2", "nested": {"x": [1, 2]}})])
    broker.emit([event("e", 1), event("e", 2, worker="node-b")])
    got = broker.events()
    assert [(e.type, e.worker, e.time) for e in got] == [
        ("task-blocked", "node-a", 123.5), ("e", "w1", 1001.0), ("e", "node-b", 1002.0)]
    assert got[0].data == {"task": "t.hog", "id": "abc", "pid": 7, "stack": "line 1\nline 2",
                           "nested": {"x": [1, 2]}}
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and seqs[0] > 0


def test_events_without_a_time_are_stamped_by_the_broker(broker: Broker) -> None:
    before = time.time()
    broker.emit([WorkerEvent(type="worker-online", worker="w")])
    [got] = broker.events()
    assert before - 1 <= got.time <= time.time() + 1
    assert got.data == {}


def test_events_page_with_after_and_limit(broker: Broker) -> None:
    broker.emit([event("e", n) for n in range(25)])
    first = broker.events(limit=10)
    assert [e.data["n"] for e in first] == list(range(10))
    second = broker.events(after=first[-1].seq, limit=10)
    assert [e.data["n"] for e in second] == list(range(10, 20))
    rest = broker.events(after=second[-1].seq)
    assert [e.data["n"] for e in rest] == list(range(20, 25))
    assert broker.events(after=rest[-1].seq) == []
    assert broker.events(limit=0) == []
    broker.emit([event("e", 25)])
    assert [e.data["n"] for e in broker.events(after=rest[-1].seq)] == [25]


def test_a_large_batch_of_events_keeps_every_event_and_its_text(broker: Broker) -> None:
    """One emit of many events (a -E batch): all stored, in order, with contiguous seqs,
    text with line breaks and separators intact (Redis sends a batch as one argument)."""
    text = "line 1\nline 2|with a bar\r\n\u2028end"
    broker.emit([WorkerEvent(type="task-failed", worker="w", time=1.0,
                             data={"n": n, "traceback": text}) for n in range(1200)])
    got = broker.events(limit=2000)
    assert [e.data["n"] for e in got] == list(range(1200))
    assert all(e.data["traceback"] == text for e in got)
    assert [e.seq for e in got] == list(range(got[0].seq, got[0].seq + 1200))


def test_events_of_many_small_batches_read_in_order_across_pages(broker: Broker) -> None:
    """Events emitted one or two at a time (Redis stores a batch as one member and reads
    members a page at a time): any window of them comes back whole and in order."""
    for n in range(0, 60, 3):
        broker.emit([event("e", n)])
        broker.emit([event("e", n + 1), event("e", n + 2)])
    everything = broker.events(limit=1000)
    assert [e.data["n"] for e in everything] == list(range(60))
    for start, limit in ((0, 45), (1, 17), (16, 33), (40, 100)):
        got = broker.events(after=everything[start].seq, limit=limit)
        assert [e.data["n"] for e in got] == list(range(start + 1, min(60, start + 1 + limit)))


def test_events_are_capped_to_the_newest(broker: Broker) -> None:
    broker.events_kept = 20
    for n in range(0, 95, 5):  # 95 events in 19 emits
        broker.emit([event("e", m) for m in range(n, n + 5)])
        got = broker.events(limit=1000)
        assert [e.data["n"] for e in got] == list(range(max(0, n + 5 - 20), n + 5))
    # A reader that fell behind resumes at the oldest kept event.
    assert [e.data["n"] for e in broker.events(after=1, limit=3)] == [75, 76, 77]
    broker.emit([event("e", 95)])
    assert [e.data["n"] for e in broker.events(limit=1000)] == list(range(76, 96))


def test_newest_event_seq_is_the_last_emitted_and_agrees_with_the_bisection(
        broker: Broker) -> None:
    """A broker's own ``newest_event_seq`` (one read where it overrides it) gives what
    the base class's bisection over :meth:`Broker.events` gives, as the log grows and
    once it is capped."""
    def bisected() -> int:
        return Broker.newest_event_seq(broker)

    assert broker.newest_event_seq() == 0 == bisected()
    broker.events_kept = 20
    for count in (1, 2, 3, 17, 30):
        broker.emit([event("e", n) for n in range(count)])
        newest = broker.events(0, 1000)[-1].seq
        assert broker.newest_event_seq() == newest == bisected()


def test_events_of_a_task_are_its_own_in_the_range_and_agree_with_the_default(
        broker: Broker) -> None:
    """``events_of`` (SQLite filters in SQL) keeps exactly the events whose ``uuid`` is
    the task's, within ``after < seq <= until`` and the cap, as the base class's read
    and filter does: an id that is only a prefix of another's, or that appears in
    another field, is not the task's."""
    broker.events_kept = 30
    mine, other = "t-1", "t-10"
    broker.emit([WorkerEvent("task-received", "w", {"uuid": other, "n": 0}),
                 WorkerEvent("task-started", "w", {"uuid": mine, "n": 1}),
                 WorkerEvent("task-failed", "w", {"uuid": other, "parent": mine, "n": 2}),
                 WorkerEvent("worker-heartbeat", "w", {"n": 3}),
                 WorkerEvent("task-succeeded", "w", {"uuid": mine, "n": 4})])
    newest = broker.newest_event_seq()
    for after, until in ((0, newest), (newest - 4, newest - 1), (newest - 1, newest), (newest, newest)):
        got = broker.events_of(mine, after, until)
        assert [(e.type, e.data["n"]) for e in got] == [
            (e.type, e.data["n"]) for e in Broker.events_of(broker, mine, after, until)]
        assert all(e.data["uuid"] == mine and after < e.seq <= until for e in got)
    assert [e.data["n"] for e in broker.events_of(mine, 0, newest)] == [1, 4]
    assert [e.data["n"] for e in broker.events_of(other, 0, newest)] == [0, 2]
    broker.emit([WorkerEvent("e", "w", {"uuid": mine, "n": 5 + n}) for n in range(40)])
    newest = broker.newest_event_seq()
    assert [e.data["n"] for e in broker.events_of(mine, 0, newest)] == list(range(15, 45))


# -- revoke ------------------------------------------------------------------------------


def new_task_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def revoked(task_id: str, *, ttl: float = LONG, terminate: bool = False,
            signal: str = "SIGTERM") -> Revocation:
    return Revocation(task_id=task_id, expires=time.time() + ttl, terminate=terminate,
                      signal=signal)


def test_revocations_round_trip_in_order_with_increasing_seq(broker: Broker) -> None:
    assert broker.revocations() == []
    broker.revoke([])
    a, b, c = new_task_id(), new_task_id(), new_task_id()
    expires = time.time() + LONG
    broker.revoke([Revocation(a, expires),
                   Revocation(b, expires, terminate=True, signal="SIGKILL")])
    broker.revoke([Revocation(c, expires, seq=12345)])  # the given seq is ignored
    got = broker.revocations()
    assert [(r.task_id, r.terminate, r.signal) for r in got] == [
        (a, False, "SIGTERM"), (b, True, "SIGKILL"), (c, False, "SIGTERM")]
    assert all(r.expires == pytest.approx(expires) for r in got)
    seqs = [r.seq for r in got]
    assert seqs == sorted(set(seqs)) and seqs[0] > 0 and len(seqs) == 3


def test_revocations_page_with_after(broker: Broker) -> None:
    ids = [new_task_id() for _ in range(25)]
    broker.revoke([revoked(i) for i in ids[:20]])
    first = broker.revocations(limit=10)
    assert [r.task_id for r in first] == ids[:10]
    second = broker.revocations(after=first[-1].seq, limit=10)
    assert [r.task_id for r in second] == ids[10:20]
    cursor = second[-1].seq
    assert broker.revocations(after=cursor) == []
    assert broker.revocations(limit=0) == []
    broker.revoke([revoked(i) for i in ids[20:]])
    rest = broker.revocations(after=cursor)
    assert [r.task_id for r in rest] == ids[20:]
    assert rest[0].seq > cursor
    assert len(broker.revocations()) == 25  # the default limit is generous


def test_an_expired_revocation_is_not_returned(broker: Broker) -> None:
    short, steady, stale = new_task_id(), new_task_id(), new_task_id()
    broker.revoke([revoked(short, ttl=LEASE), revoked(steady)])
    broker.revoke([Revocation(stale, expires=time.time() - 1)])  # expired already
    assert [r.task_id for r in broker.revocations()] == [short, steady]
    time.sleep(AFTER_LEASE)
    assert [r.task_id for r in broker.revocations()] == [steady]
    # Dropped entries leave no hole a cursor could fall into.
    assert [r.task_id for r in broker.revocations(limit=1)] == [steady]
    later_one = new_task_id()
    broker.revoke([revoked(later_one)])
    assert [r.task_id for r in broker.revocations()] == [steady, later_one]


def test_revoking_again_with_terminate_is_seen_past_the_cursor(broker: Broker) -> None:
    task_id = new_task_id()
    broker.revoke([revoked(task_id)])
    [plain] = broker.revocations()
    cursor = plain.seq  # a worker has seen the plain revoke
    broker.revoke([revoked(task_id, terminate=True, signal="SIGKILL")])
    [again] = broker.revocations(after=cursor)
    assert (again.task_id, again.terminate, again.signal) == (task_id, True, "SIGKILL")
    assert again.seq > plain.seq
    # A worker starting now sees both entries, oldest first.
    assert [(r.task_id, r.terminate) for r in broker.revocations()] == [
        (task_id, False), (task_id, True)]


def test_revocations_commands_and_events_count_on_their_own(broker: Broker) -> None:
    """Each stream has its own sequence: writing one never moves another's seq."""
    broker.emit([event("e", 1)])
    broker.revoke([revoked(new_task_id())])
    first_command = broker.broadcast({"command": "ping"})
    broker.emit([event("e", 2)])
    broker.revoke([revoked(new_task_id())])
    second_command = broker.broadcast({"command": "ping"})
    e1, e2 = broker.events()
    r1, r2 = broker.revocations()
    assert e2.seq == e1.seq + 1
    assert r2.seq == r1.seq + 1
    assert second_command == first_command + 1


# -- remote control: the command stream -----------------------------------------------------


def test_broadcast_and_commands_in_order(broker: Broker) -> None:
    assert broker.command_cursor() == 0
    assert broker.commands(after=0) == []
    before = time.time()
    body = {"command": "rate_limit", "arguments": {"task": "t.add", "rate": "10/s"},
            "destination": ["w1@host", "w2@host"], "reply_to": "box-1"}
    seqs = [broker.broadcast(body), broker.broadcast({"command": "ping"}),
            broker.broadcast({"command": "shutdown", "destination": None})]
    assert seqs == sorted(set(seqs)) and seqs[0] > 0
    got = broker.commands(after=0)
    assert all(isinstance(c, ControlCommand) for c in got)
    assert [c.seq for c in got] == seqs
    assert [c.body for c in got] == [body, {"command": "ping"},
                                     {"command": "shutdown", "destination": None}]
    assert all(before - 1 <= c.time <= time.time() + 1 for c in got)
    # A worker that starts now begins at the cursor and never sees older commands.
    cursor = broker.command_cursor()
    assert cursor == seqs[-1]
    assert broker.commands(after=cursor) == []
    newest = broker.broadcast({"command": "pool_grow", "arguments": {"n": 2}})
    assert newest > cursor
    assert [(c.seq, c.body) for c in broker.commands(after=cursor)] == [
        (newest, {"command": "pool_grow", "arguments": {"n": 2}})]
    assert broker.command_cursor() == newest


def test_commands_page_with_after_and_limit(broker: Broker) -> None:
    for n in range(25):
        broker.broadcast({"n": n})
    first = broker.commands(after=0, limit=10)
    assert [c.body["n"] for c in first] == list(range(10))
    second = broker.commands(after=first[-1].seq, limit=10)
    assert [c.body["n"] for c in second] == list(range(10, 20))
    assert [c.body["n"] for c in broker.commands(after=second[-1].seq)] == list(range(20, 25))
    assert broker.commands(after=0, limit=0) == []


def test_commands_are_capped_to_the_newest(broker: Broker) -> None:
    broker.commands_kept = 20
    for n in range(95):
        seq = broker.broadcast({"n": n})
        got = broker.commands(after=0, limit=1000)
        assert [c.body["n"] for c in got] == list(range(max(0, n + 1 - 20), n + 1))
        assert broker.command_cursor() == seq  # trimming never moves the cursor back
    # A reader that fell behind resumes at the oldest kept command.
    assert [c.body["n"] for c in broker.commands(after=1, limit=3)] == [75, 76, 77]


# -- remote control: replies ------------------------------------------------------------------


def new_box() -> str:
    return f"box-{uuid.uuid4().hex[:12]}"


def test_replies_are_collected_once_in_arrival_order(broker: Broker) -> None:
    box = new_box()
    assert broker.replies(box, timeout=0) == []
    broker.reply(box, {"w1@host": {"ok": "pong"}})
    broker.reply(box, {"w2@host": {"ok": "pong", "nested": [1, {"x": None}]}})
    broker.reply(box, {"w3@host": {"error": "no such task"}})
    assert broker.replies(box, timeout=0) == [
        {"w1@host": {"ok": "pong"}}, {"w2@host": {"ok": "pong", "nested": [1, {"x": None}]}},
        {"w3@host": {"error": "no such task"}}]
    assert broker.replies(box, timeout=0) == []  # consumed


def test_replies_return_as_soon_as_count_is_reached(broker: Broker) -> None:
    box = new_box()
    for n in range(2):
        broker.reply(box, {"n": n})
    started = time.monotonic()
    assert broker.replies(box, timeout=LONG, count=2) == [{"n": 0}, {"n": 1}]
    assert time.monotonic() - started < 1.0
    # At most count: the others stay in the box for the next call.
    for n in range(2, 5):
        broker.reply(box, {"n": n})
    assert broker.replies(box, timeout=LONG, count=1) == [{"n": 2}]
    assert broker.replies(box, timeout=0) == [{"n": 3}, {"n": 4}]
    assert broker.replies(box, timeout=LONG, count=0) == []


def test_replies_wait_out_the_timeout_and_return_what_arrived(broker: Broker) -> None:
    box = new_box()
    broker.reply(box, {"n": 0})
    broker.reply(box, {"n": 1})
    started = time.monotonic()
    assert broker.replies(box, timeout=0.3, count=5) == [{"n": 0}, {"n": 1}]
    assert 0.3 <= time.monotonic() - started < 2
    broker.reply(box, {"n": 2})
    started = time.monotonic()
    assert broker.replies(box, timeout=0.3) == [{"n": 2}]  # no count: the whole timeout
    assert 0.3 <= time.monotonic() - started < 2
    started = time.monotonic()
    assert broker.replies(new_box(), timeout=0.3) == []
    assert 0.3 <= time.monotonic() - started < 2


def test_reply_boxes_are_independent(broker: Broker) -> None:
    one, two = new_box(), new_box()
    broker.reply(one, {"box": 1})
    broker.reply(two, {"box": 2, "n": 0})
    broker.reply(two, {"box": 2, "n": 1})
    assert broker.replies(one, timeout=0.1, count=2) == [{"box": 1}]
    assert broker.replies(two, timeout=0) == [{"box": 2, "n": 0}, {"box": 2, "n": 1}]


def test_a_reply_sent_while_waiting_is_returned(broker: Broker) -> None:
    box = new_box()
    broker.reply(box, {"n": 0})
    replier = later(0.2, lambda: broker.reply(box, {"n": 1}))
    started = time.monotonic()
    got = broker.replies(box, timeout=LONG, count=2)
    elapsed = time.monotonic() - started
    replier.join()
    assert got == [{"n": 0}, {"n": 1}]
    assert 0.15 <= elapsed < 3  # woken by the reply, well before the timeout
    # Without a count, replies arriving during the wait are returned at the timeout.
    repliers = [later(0.1, lambda: broker.reply(box, {"n": 2})),
                later(0.2, lambda: broker.reply(box, {"n": 3}))]
    got = broker.replies(box, timeout=0.6)
    for thread in repliers:
        thread.join()
    assert sorted(r["n"] for r in got) == [2, 3]


def test_expired_reply_boxes_vanish(broker: Broker) -> None:
    gone, kept, refreshed = new_box(), new_box(), new_box()
    broker.reply(gone, {"n": 0}, ttl=LEASE)
    broker.reply(kept, {"n": 0}, ttl=LONG)
    # Margins of half a second: a loaded machine (the gevent legs and the browser tests
    # run at once) took more than the 0.2 s they were.
    broker.reply(refreshed, {"n": 0}, ttl=1.5)
    time.sleep(1.0)
    broker.reply(refreshed, {"n": 1}, ttl=1.5)  # moves the whole box's expiry
    time.sleep(1.0)  # past the first reply's 1.5 s, within the second's
    assert broker.replies(gone, timeout=0) == []
    assert broker.replies(kept, timeout=0) == [{"n": 0}]
    assert broker.replies(refreshed, timeout=0) == [{"n": 0}, {"n": 1}]
    broker.reply(gone, {"n": 1}, ttl=LONG)  # a new box under the old name
    assert broker.replies(gone, timeout=0) == [{"n": 1}]


# -- waiting fetch -----------------------------------------------------------------------


def test_waiting_fetch_returns_a_message_published_meanwhile(broker: Broker) -> None:
    queue = new_queue()
    publisher = later(0.2, lambda: publish(broker, queue, b"late"))
    started = time.monotonic()
    got = fetch(broker, queue, timeout=10)
    elapsed = time.monotonic() - started
    publisher.join()
    assert [d.body for d in got] == [b"late"]
    assert 0.15 <= elapsed < 3


def test_waiting_fetch_gives_up_at_the_timeout(broker: Broker) -> None:
    queue = new_queue()
    publish(broker, queue, b"far future", eta=time.time() + LONG)
    started = time.monotonic()
    assert fetch(broker, queue, timeout=0.3) == []
    assert 0.3 <= time.monotonic() - started < 2


def test_concurrent_consumers_never_share_a_message(broker: Broker) -> None:
    queue = new_queue()
    ids = broker.publish([OutgoingMessage(queue, b"%d" % i) for i in range(300)])
    claimed: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def consume(slot: int) -> None:
        # Until all are claimed (or 30 s): on a push broker (RabbitMQ) a fetch may find
        # nothing while the next messages are on their way, pushed but not yet read.
        try:
            give_up = time.monotonic() + 30
            while sum(map(len, claimed)) < len(ids) and time.monotonic() < give_up:
                got = fetch(broker, queue, count=7, consumer=f"c{slot}", timeout=0.1)
                claimed[slot].extend(d.id for d in got)
                assert all(broker.ack(got))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    everything = [i for ids_of_one in claimed for i in ids_of_one]
    assert len(everything) == len(set(everything))
    assert sorted(everything) == sorted(ids)


# -- shared between processes (SQLite and servers) ------------------------------------------

CHILD_PUBLISHES = """
import sys, time
from celeriac.brokers import OutgoingMessage, broker_from_url
broker = broker_from_url(sys.argv[1])
broker.ping()
print("ready", flush=True)
time.sleep(0.2)
broker.publish([OutgoingMessage(queue=sys.argv[2], body=sys.argv[3].encode())])
"""


def test_message_published_by_another_process_is_fetched(shared_broker: Broker) -> None:
    broker = shared_broker
    queue = new_queue()
    child = subprocess.Popen([sys.executable, "-c", CHILD_PUBLISHES, broker.url, queue, "hi"],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        got = fetch(broker, queue, timeout=10)  # waiting when the child publishes
        assert [d.body for d in got] == [b"hi"]
    finally:
        assert child.wait(10) == 0


CHILD_REPLIES = """
import sys, time
from celeriac.brokers import broker_from_url
broker = broker_from_url(sys.argv[1])
broker.ping()
print("ready", flush=True)
time.sleep(0.2)
broker.reply(sys.argv[2], {"from": "child"})
"""


def test_a_reply_from_another_process_is_returned_while_waiting(shared_broker: Broker) -> None:
    broker = shared_broker
    box = new_box()
    child = subprocess.Popen([sys.executable, "-c", CHILD_REPLIES, broker.url, box],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        got = broker.replies(box, timeout=LONG, count=1)  # waiting when the child replies
        assert got == [{"from": "child"}]
        assert time.monotonic() - started < 5
    finally:
        assert child.wait(10) == 0


def test_revocations_and_commands_are_seen_by_another_process(shared_broker: Broker) -> None:
    broker = shared_broker
    task_id = new_task_id()
    broker.revoke([revoked(task_id, terminate=True)])
    seq = broker.broadcast({"command": "ping", "reply_to": "b"})
    script = ("import sys, json; from celeriac.brokers import broker_from_url;"
              " b = broker_from_url(sys.argv[1]);"
              " print(json.dumps([[r.task_id, r.terminate] for r in b.revocations()]));"
              " print(json.dumps([[c.seq, c.body] for c in b.commands(after=0)]));"
              " print(b.command_cursor())")
    out = subprocess.run([sys.executable, "-c", script, broker.url], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    revocations, commands, cursor = out.splitlines()
    assert json.loads(revocations) == [[task_id, True]]
    assert json.loads(commands) == [[seq, {"command": "ping", "reply_to": "b"}]]
    assert int(cursor) == seq


def test_ping_succeeds_on_a_live_broker(broker: Broker) -> None:
    broker.ping()


# -- Redis specifics ------------------------------------------------------------------------


def test_redis_control_writes_retried_after_a_lost_reply_are_stored_once(redis_url: str) -> None:
    """The script ran, then the connection dropped before its reply: the retry finds the
    receipt, so a command is not broadcast twice (a second ``pool_grow`` would grow twice)."""
    import redis

    broker = broker_from_url(redis_url)
    real = broker._script("control")  # type: ignore[attr-defined]
    calls: list[int] = []

    def lose_the_first_reply(**kwargs: object) -> object:
        value = real(**kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise redis.ConnectionError("Connection closed by server. (simulated)")
        return value

    for write in (lambda: broker.broadcast({"command": "pool_grow", "arguments": {"n": 1}}),
                  lambda: broker.revoke([revoked("t-once")]),
                  lambda: broker.reply("box", {"from": "w1"})):
        calls.clear()
        broker._scripts["control"] = lose_the_first_reply  # type: ignore[attr-defined]
        result = write()
        assert len(calls) == 2
        if result is not None:
            assert result == broker.command_cursor()  # the seq of the first (applied) try
    assert [c.body for c in broker.commands(after=0)] == [
        {"command": "pool_grow", "arguments": {"n": 1}}]
    assert [r.task_id for r in broker.revocations()] == ["t-once"]
    assert broker.replies("box", timeout=0) == [{"from": "w1"}]


def _redis_chunks(queue: str, sizes: list[int]) -> list[list[OutgoingMessage]]:
    return [[OutgoingMessage(queue=queue, body=b"%d-%d" % (c, i)) for i in range(n)]
            for c, n in enumerate(sizes)]


def test_redis_publish_chunks_survive_a_lost_script_and_a_lost_reply(redis_url: str,
                                                                    redis_server: Any) -> None:
    """The pipelined bulk publish: the server forgets its scripts (a restart, SCRIPT FLUSH),
    then the connection drops after every call was applied but before the replies were
    read. The calls are sent again as retries, which their receipts make no-ops."""
    import redis

    broker = broker_from_url(redis_url)
    queue = new_queue()
    redis.Redis.from_url(redis_server.url()).script_flush()
    chunks = _redis_chunks(queue, [1_000, 1_000, 500])
    broker.publish_chunks(chunks)
    assert fetch_one_by_one(broker, queue) == [m.body for chunk in chunks for m in chunk]

    real = broker._pipeline_scripts  # type: ignore[attr-defined]
    tries: list[int] = []

    def lose_the_replies(script: object, calls: list[list[object]]) -> tuple[int, bool]:
        tries.append(len(calls))
        applied = real(script, calls)
        if len(tries) == 1:
            # A worker runs and acks the first message before the retry goes out.
            assert broker.ack(fetch(broker, queue, count=1)) == [True]
            raise redis.ConnectionError("Connection closed by server. (simulated)")
        return applied  # type: ignore[no-any-return]

    broker._pipeline_scripts = lose_the_replies  # type: ignore[attr-defined]
    chunks = _redis_chunks(queue, [1_000, 300, 300])
    broker.publish_chunks(chunks)
    assert tries == [3, 3], "the retry sends every call whose reply was not read"
    assert fetch_one_by_one(broker, queue) == [m.body for chunk in chunks for m in chunk][1:]
    broker.close()


def test_redis_waiting_fetch_claims_behind_its_blpop_even_after_a_script_flush(
        redis_url: str, redis_server: Any) -> None:
    """An idle fetch sends its claim behind its BLPOP. A message published meanwhile is
    claimed in that same round trip; if the server lost the claim script (a restart,
    SCRIPT FLUSH) the fetch loads it and claims alone, losing nothing."""
    import redis

    broker = broker_from_url(redis_url)
    queue = new_queue()
    sent: list[object] = []
    original = broker._claim  # type: ignore[attr-defined]

    def counted(*args: object) -> object:
        sent.append(args)
        return original(*args)

    broker._claim = counted  # type: ignore[attr-defined]
    try:
        thread = later(0.3, lambda: publish(broker, queue, b"first"))
        got = fetch(broker, queue, timeout=LONG)
        thread.join()
        assert [d.body for d in got] == [b"first"]
        assert len(sent) == 1, "the first claim only: the woken one came behind the BLPOP"

        # The scripts go while the fetch waits: its queued claim is refused (NOSCRIPT).
        raw = redis.Redis.from_url(redis_server.url())
        thread = later(0.3, lambda: (raw.script_flush(), publish(broker, queue, b"second")))
        got = fetch(broker, queue, timeout=LONG)
        thread.join()
        assert [d.body for d in got] == [b"second"]
    finally:
        broker.close()


def test_redis_publish_chunks_keep_a_chunk_past_one_script_call_in_one_transaction(
        redis_url: str) -> None:
    """A group sends all its messages as one chunk, which must stay all or none: a chunk
    over a script call's 1,000 goes through publish (one MULTI), never the pipeline, whose
    calls are atomic one by one only."""
    broker = broker_from_url(redis_url)
    queue = new_queue()

    def pipelined(script: object, calls: list[list[object]]) -> tuple[int, bool]:
        raise AssertionError(f"{len(calls)} calls pipelined")

    broker._pipeline_scripts = pipelined  # type: ignore[attr-defined]
    try:
        broker.publish_chunks(_redis_chunks(queue, [1_500]))
        broker.publish_chunks(_redis_chunks(queue, [1_200, 10]))
        assert len(fetch_one_by_one(broker, queue)) == 2_710
        with pytest.raises(AssertionError, match="2 calls pipelined"):
            broker.publish_chunks(_redis_chunks(queue, [1_000, 10]))
    finally:
        broker.close()


def test_redis_publish_chunks_that_give_up_say_what_may_be_stored(redis_url: str) -> None:
    import redis

    broker = broker_from_url(redis_url)
    broker.retry_for(0.3)
    queue = new_queue()
    real = broker._pipeline_scripts  # type: ignore[attr-defined]

    def answer_one_then_drop(script: object, calls: list[list[object]]) -> tuple[int, bool]:
        if len(calls) == 3:  # the first try: the first call is answered, then the line drops
            real(script, calls[:1])
        raise redis.ConnectionError("Connection closed by server. (simulated)")

    broker._pipeline_scripts = answer_one_then_drop  # type: ignore[attr-defined]
    with pytest.raises(BrokerUnreachable) as info:
        broker.publish_chunks(_redis_chunks(queue, [10, 20, 30]))
    if sys.version_info >= (3, 11):
        assert any("0 of 60 messages were published" in note and "the next 60 may have been"
                   in note for note in info.value.__notes__)
    assert len(fetch_one_by_one(broker, queue)) == 10, "the answered call was stored, once"
    broker.close()


# -- SQLite specifics and the URL registry -------------------------------------------------


def test_sqlite_ping_on_unusable_path_raises_unreachable(tmp_path: Path) -> None:
    missing = broker_from_url(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'b.db'}")
    with pytest.raises(BrokerUnreachable, match="no/such/dir") as info:
        missing.ping()
    assert "\n" not in str(info.value)
    directory = broker_from_url(f"sqlite:///{tmp_path}")  # a directory, not a file
    with pytest.raises(BrokerUnreachable):
        directory.ping()


def test_sqlite_file_from_before_the_suspect_mark_keeps_working(tmp_path: Path) -> None:
    """A file whose ``messages`` table has no ``suspect`` column (made by an older
    celeriac) is read as it is and gets the column on the broker's first write."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("""CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, body BLOB NOT NULL,
            priority INTEGER NOT NULL, available_at REAL NOT NULL, consumer TEXT,
            token INTEGER NOT NULL DEFAULT 0, delivery_count INTEGER NOT NULL DEFAULT 0)""")
        conn.execute("INSERT INTO messages (queue, body, priority, available_at)"
                      " VALUES ('q', X'6f6c64', 0, 0)")
    conn.close()
    old = broker_from_url(f"sqlite:///{path}", max_deliveries=MAX_DELIVERIES)
    assert stats_of(old, "q") == QueueStats(ready=1)  # a read needs no new column
    [held] = fetch(old, "q", consumer="dead")
    assert (held.body, held.suspect) == (b"old", False)
    assert old.release_consumer("dead", suspects=[held.id]) == 1
    newer = broker_from_url(f"sqlite:///{path}", max_deliveries=MAX_DELIVERIES)
    [again] = fetch(newer, "q")
    assert (again.delivery_count, again.suspect) == (1, True)
    assert newer.ack([again]) == [True]
    old.close()
    newer.close()


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="memory://") as info:
        broker_from_url("carrierpigeon://loft")
    assert "sqlite://" in str(info.value)
    assert "carrierpigeon" in str(info.value)


def test_events_of_an_odd_id_across_many_batches_and_a_bound_inside_one(broker: Broker) -> None:
    """An id JSON must escape (a quote, a backslash, non-ASCII text) is found in the log
    as the events hold it (Redis filters the stored lines for it before decoding), over
    more batches than one page of the store, and ``until`` may fall inside a batch."""
    odd, plain = 'q"uote\\é-1', "q-1"
    for n in range(40):
        broker.emit([WorkerEvent("task-started", "w", {"uuid": odd if n % 3 == 0 else plain,
                                                        "n": n})])
    broker.emit([WorkerEvent("task-succeeded", "w", {"uuid": odd, "n": 40 + n}) for n in range(5)])
    newest = broker.newest_event_seq()
    got = broker.events_of(odd, 0, newest - 2)  # stops inside the last batch
    assert [e.data["n"] for e in got] == [n for n in range(40) if n % 3 == 0] + [40, 41, 42]
    assert all(e.data["uuid"] == odd for e in got)
    first = broker.events(limit=1)[0].seq
    assert [e.data["n"] for e in broker.events_of(odd, first + 3, first + 9)] == [6, 9]
    assert broker.events_of(odd, newest, newest) == []

