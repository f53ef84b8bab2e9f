"""The contract of the brokers' read model and admin actions (the dashboard's listings,
requeue and delete, enqueue now, pause and resume), over every broker.

RabbitMQ cannot show its ready messages without taking deliveries, nor read or edit its
delay ladder: its ready and scheduled listings have a total and no rows, retries are
counted with the scheduled messages, dead letters are listed oldest first, and deleting
a delayed message or making it ready now is refused (``docs/rabbitmq.md``). The tests
allow that for it only, and check that each such page says so in its ``note``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.brokers import Broker, Delivery, OutgoingMessage, Page
from celeriac.brokers.browse import ARGS_PREVIEW
from celeriac.exceptions import BrokerError, ConfigurationError
from celeriac.message import build
from contract.test_broker import BROKERS, _make_broker, fetch, new_queue, stats_of

LONG = 3600.0


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    yield from _make_broker(request.param, request, tmp_path)


def on_rabbitmq(broker: Broker) -> bool:
    return "amqp" in type(broker).__module__


def lists_ready(broker: Broker) -> bool:
    """False for the one broker that can count its ready messages but not show them."""
    return not on_rabbitmq(broker)


def newest_first(broker: Broker, ids: list[str]) -> list[str]:
    """Dead letter ids (oldest first) in the order a broker lists them."""
    return ids if on_rabbitmq(broker) else ids[::-1]


def body(task: str = "tasks.add", task_id: str = "id-1", args: tuple[object, ...] = (1, 2),
         kwargs: dict[str, object] | None = None, retries: int = 0) -> bytes:
    envelope = build(task, task_id, list(args), kwargs or {}, queue="q", retries=retries)
    return envelope.dumps()


def task_id(data: bytes) -> str:
    """The task id of a message body (RabbitMQ hands back the same envelope, its keys in
    another order)."""
    found: str = json.loads(data)["headers"]["id"]
    return found


def send(broker: Broker, queue: str, *bodies: bytes, priority: int = 0,
         eta: float | None = None) -> list[str]:
    return broker.publish([OutgoingMessage(queue, b, priority=priority, eta=eta) for b in bodies])


def ids_of(page: Page) -> list[str]:
    return [item.id for item in page.items]


def take(broker: Broker, queue: str, n: int) -> list[Delivery]:
    """Claim ``n`` messages (RabbitMQ hands them over a prefetch window at a time)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        got += fetch(broker, queue, count=n - len(got), timeout=1.0)
    assert len(got) == n
    return got


def bury(broker: Broker, queue: str, *bodies: bytes, reason: str = "boom") -> list[str]:
    """Publish ``bodies`` and dead-letter them one by one (oldest first); their ids."""
    send(broker, queue, *bodies)
    got = take(broker, queue, len(bodies))
    for delivery in got:
        assert broker.dead_letter([delivery], reason) == [True]
    return [d.id for d in got]


# -- listings ------------------------------------------------------------------------------
def test_ready_lists_in_claim_order_with_the_envelope_read(broker: Broker) -> None:
    queue = new_queue()
    before = time.time()
    low = send(broker, queue, body(task_id="low", args=(1, "x")))
    high = send(broker, queue, body(task_id="high", kwargs={"k": "<script>"}), priority=7)
    page = broker.browse(queue, "ready")
    assert page.total == 2 and page.offset == 0
    if not lists_ready(broker):
        assert page.items == [] and page.note
        return
    assert page.note is None
    assert ids_of(page) == high + low
    first, second = page.items
    assert (first.task, first.task_id, first.queue) == ("tasks.add", "high", queue)
    assert first.args == "[1, 2], {'k': '<script>'}"
    assert second.args == "[1, 'x']"
    assert before - 1 <= second.enqueued_at <= time.time() + 1
    assert (second.due_at, second.retries, second.deliveries, second.reason) == (None, 0, 0, None)


def test_pages_split_the_listing_without_gaps_or_repeats(broker: Broker) -> None:
    queue = new_queue()
    ids = send(broker, queue, *(body(task_id=f"t{i}") for i in range(23)))
    if not lists_ready(broker):
        assert broker.browse(queue, "ready", offset=20, limit=10).total == 23
        return
    pages = [broker.browse(queue, "ready", offset=offset, limit=10) for offset in (0, 10, 20, 30)]
    assert [len(p.items) for p in pages] == [10, 10, 3, 0]
    assert {p.total for p in pages} == {23}
    assert [i for p in pages for i in ids_of(p)] == ids
    assert broker.browse(queue, "ready", limit=0).items == []


def test_scheduled_and_retries_are_listed_apart_due_first(broker: Broker) -> None:
    queue = new_queue()
    now = time.time()
    late = send(broker, queue, body(task_id="late"), eta=now + 2 * LONG)
    soon = send(broker, queue, body(task_id="soon"), eta=now + LONG)
    retry = send(broker, queue, body(task_id="again", retries=2), eta=now + LONG)
    ready = send(broker, queue, body(task_id="now", retries=1))
    assert stats_of(broker, queue).scheduled == 3
    if on_rabbitmq(broker):
        counted, retries = broker.browse(queue, "scheduled"), broker.browse(queue, "retries")
        assert (counted.total, counted.items, retries.total, retries.items) == (3, [], 0, [])
        assert counted.note and retries.note
        return
    scheduled = broker.browse(queue, "scheduled")
    assert ids_of(scheduled) == soon + late and scheduled.total == 2
    assert scheduled.items[0].due_at == pytest.approx(now + LONG, abs=0.01)
    assert scheduled.items[0].task_id == "soon"
    retries = broker.browse(queue, "retries")
    assert ids_of(retries) == retry and retries.total == 1
    assert (retries.items[0].retries, retries.items[0].task_id) == (2, "again")
    assert broker.browse(queue, "ready").total == 1
    if lists_ready(broker):
        assert ids_of(broker.browse(queue, "ready")) == ready
    assert stats_of(broker, queue).scheduled == 3


def test_dead_letters_newest_first_with_reason_and_deliveries(broker: Broker) -> None:
    queue = new_queue()
    before = time.time()
    ids = bury(broker, queue, body(task_id="a"), body(task_id="b"), reason="rejected: no")
    page = broker.browse(queue, "dead")
    assert page.total == 2
    assert ids_of(page) == newest_first(broker, ids)
    newest = next(item for item in page.items if item.id == ids[1])
    assert (newest.task_id, newest.reason, newest.deliveries) == ("b", "rejected: no", 1)
    assert newest.failed_at is not None and before - 1 <= newest.failed_at <= time.time() + 1
    assert ids_of(broker.browse(queue, "dead", offset=1, limit=5)) == newest_first(broker, ids)[1:]
    empty = broker.browse(new_queue(), "dead")
    assert (empty.items, empty.total, empty.offset) == ([], 0, 0)


def test_a_body_that_is_not_a_task_message_still_gets_a_row(broker: Broker) -> None:
    queue = new_queue()
    bury(broker, queue, b"\xff not json", body(args=("x" * 2000,)))
    items = broker.browse(queue, "dead").items
    odd, long = items if on_rabbitmq(broker) else items[::-1]
    assert (odd.task, odd.task_id, odd.args, odd.retries) == ("", "", "", 0)
    assert len(long.args) <= ARGS_PREVIEW


def test_unknown_listing_or_bad_page_is_refused(broker: Broker) -> None:
    with pytest.raises(ConfigurationError, match="listing"):
        broker.browse(new_queue(), "leased")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="offset"):
        broker.browse(new_queue(), "dead", offset=-1)
    with pytest.raises(ConfigurationError):
        broker.delete_messages(new_queue(), "ready", None)  # type: ignore[arg-type]


# -- admin actions ---------------------------------------------------------------------------
def test_requeued_dead_letters_run_again_with_deliveries_reset(broker: Broker) -> None:
    queue, other = new_queue(), new_queue()
    ids = bury(broker, queue, body(task_id="a"), body(task_id="b"), body(task_id="c"))
    elsewhere = bury(broker, other, body(task_id="x"))
    assert broker.requeue_dead(queue, [ids[1], *elsewhere, "no-such-id"]) == 1
    assert ids_of(broker.browse(queue, "dead")) == newest_first(broker, [ids[0], ids[2]])
    assert broker.browse(other, "dead").total == 1
    got = fetch(broker, queue)
    assert [(task_id(d.body), d.delivery_count) for d in got] == [("b", 1)]
    assert broker.ack(got) == [True]
    assert broker.requeue_dead(queue, None) == 2
    assert broker.browse(queue, "dead").total == 0
    assert sorted(task_id(d.body) for d in fetch(broker, queue)) == ["a", "c"]
    assert stats_of(broker, queue).dead == 0 and stats_of(broker, other).dead == 1


def test_a_requeued_dead_letter_keeps_its_priority(broker: Broker) -> None:
    if on_rabbitmq(broker):
        pytest.skip("the priority of a RabbitMQ queue is RabbitMQ's (quorum queues: none before 4.0)")
    queue = new_queue()
    send(broker, queue, body(task_id="urgent"), priority=8)
    [urgent] = fetch(broker, queue)
    assert broker.dead_letter([urgent], "boom") == [True]
    send(broker, queue, body(task_id="plain"))
    assert broker.requeue_dead(queue, None) == 1
    assert [task_id(d.body) for d in fetch(broker, queue, count=1)] == ["urgent"]


def test_delete_one_or_all_of_a_kind(broker: Broker) -> None:
    queue = new_queue()
    if on_rabbitmq(broker):
        dead = bury(broker, queue, body(task_id="d1"), body(task_id="d2"), body(task_id="d3"))
        assert broker.delete_messages(queue, "dead", [dead[1], "nope"]) == 1
        assert ids_of(broker.browse(queue, "dead")) == [dead[0], dead[2]]
        assert broker.delete_messages(queue, "dead", None) == 2
        assert stats_of(broker, queue).dead == 0
        send(broker, queue, body(task_id="s1"), eta=time.time() + LONG)
        for kind in ("scheduled", "retries"):
            with pytest.raises(BrokerError, match="delay ladder"):
                broker.delete_messages(queue, kind, None)  # type: ignore[arg-type]
        return
    eta = time.time() + LONG
    scheduled = send(broker, queue, body(task_id="s1"), body(task_id="s2"), eta=eta)
    retries = send(broker, queue, body(task_id="r1", retries=1), body(task_id="r2", retries=1),
                   eta=eta)
    dead = bury(broker, queue, body(task_id="d1"), body(task_id="d2"))
    # An id of another kind is ignored.
    assert broker.delete_messages(queue, "scheduled", [scheduled[0], retries[0], dead[0]]) == 1
    assert ids_of(broker.browse(queue, "scheduled")) == scheduled[1:]
    assert broker.delete_messages(queue, "retries", [retries[1]]) == 1
    assert broker.delete_messages(queue, "dead", [dead[0]]) == 1
    assert ids_of(broker.browse(queue, "dead")) == dead[1:]
    assert broker.delete_messages(queue, "scheduled", None) == 1
    assert broker.delete_messages(queue, "retries", None) == 1
    assert broker.delete_messages(queue, "dead", None) == 1
    for kind in ("scheduled", "retries", "dead"):
        assert broker.browse(queue, kind).total == 0  # type: ignore[arg-type]
    stats = stats_of(broker, queue)
    assert (stats.ready, stats.scheduled, stats.dead) == (0, 0, 0)


def test_enqueue_now_makes_a_delayed_message_ready(broker: Broker) -> None:
    queue = new_queue()
    eta = time.time() + LONG
    later, retry = send(broker, queue, body(task_id="later"), body(task_id="r", retries=3),
                        eta=eta)
    ready = send(broker, queue, body(task_id="ready"))
    assert fetch(broker, queue, count=5)[0].id == ready[0]
    if on_rabbitmq(broker):
        with pytest.raises(BrokerError, match="delay ladder"):
            broker.enqueue_now(queue, [later])
        return
    assert broker.enqueue_now(queue, [later, retry, ready[0], "nope"]) == 2
    assert broker.browse(queue, "scheduled").total == broker.browse(queue, "retries").total == 0
    assert sorted(d.id for d in fetch(broker, queue, count=5)) == sorted([later, retry])
    assert broker.enqueue_now(queue, []) == 0


def test_requeue_and_delete_of_many_go_through(broker: Broker) -> None:
    queue = new_queue()
    n = 2500  # more than one chunk of the bulk actions
    send(broker, queue, *(b"%d" % i for i in range(n)))
    got = take(broker, queue, n)
    assert broker.dead_letter(got, "bulk") == [True] * n
    assert broker.browse(queue, "dead").total == n
    assert broker.requeue_dead(queue, None) == n
    assert broker.browse(queue, "dead").total == 0
    assert stats_of(broker, queue).ready == n
    assert broker.purge(queue) == n
    if on_rabbitmq(broker):
        return  # scheduled messages cannot be deleted one by one there
    send(broker, queue, *(b"%d" % i for i in range(n)), eta=time.time() + LONG)
    assert broker.delete_messages(queue, "scheduled", None) == n
    assert stats_of(broker, queue).scheduled == 0


# -- stats -------------------------------------------------------------------------------------
def test_oldest_age_is_how_long_the_oldest_ready_message_waited(broker: Broker) -> None:
    queue = new_queue()
    send(broker, queue, body(task_id="old"))
    send(broker, queue, b"scheduled", eta=time.time() + LONG)
    time.sleep(0.3)
    send(broker, queue, body(task_id="new"), priority=9)
    age = stats_of(broker, queue).oldest_age
    if on_rabbitmq(broker):
        assert age is None  # RabbitMQ does not tell
        return
    assert age is not None and 0.25 <= age < LONG
    got = fetch(broker, queue, count=2)
    assert len(got) == 2
    assert stats_of(broker, queue).oldest_age is None  # only a scheduled one is left


# -- pause -------------------------------------------------------------------------------------
def test_a_paused_queue_keeps_taking_messages(broker: Broker) -> None:
    queue, other = new_queue(), new_queue()
    assert queue not in broker.paused()
    broker.pause(queue)
    broker.pause(queue)
    assert queue in broker.paused() and other not in broker.paused()
    send(broker, queue, b"while paused")
    stats = stats_of(broker, queue)
    assert (stats.ready, stats.paused) == (1, True)
    broker.resume(queue)
    broker.resume(queue)
    assert queue not in broker.paused()
    assert stats_of(broker, queue).paused is False
    assert [d.body for d in fetch(broker, queue)] == [b"while paused"]
