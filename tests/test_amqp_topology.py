"""The AMQP broker's layout on RabbitMQ (celeriac/brokers/amqp/topology.py), on a real node.

What the server really holds after the declares (read back with ``rabbitmqctl``), that
declaring twice changes nothing, that a queue Celery 5 declared is used as it is (and
Celery's own producer keeps working on a queue celeriac declared), that the delay
ladder delivers after the delay and to exactly the queue it names, and the counts and
purges the broker's stats use.
"""

from __future__ import annotations

import json
import logging
import subprocess
import textwrap
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from conftest import compare_python, needs_celery
from rabbitserver import RabbitServer

amqp = pytest.importorskip("amqp")

from celeriac.brokers.amqp import topology  # noqa: E402
from celeriac.brokers.amqp.connection import AmqpConnection  # noqa: E402
from celeriac.brokers.amqp.params import AmqpParams, Incoming, Outgoing  # noqa: E402
from celeriac.brokers.amqp.topology import CLASSIC, QUORUM  # noqa: E402
from celeriac.exceptions import BrokerError, ConfigurationError  # noqa: E402


@pytest.fixture
def conn(amqp_url: str) -> Iterator[AmqpConnection]:
    connection = AmqpConnection(AmqpParams.from_url(amqp_url), heartbeat=10, patience=30)
    yield connection
    connection.close()


def server_queues(server: RabbitServer, amqp_url: str) -> dict[str, dict[str, Any]]:
    """Every queue of the URL's vhost as the server holds it: name -> type, durable, arguments."""
    vhost = unquote(urlparse(amqp_url).path[1:])
    done = server.ctl("list_queues", "-p", vhost, "name", "type", "durable", "auto_delete",
                      "arguments", "--formatter", "json", "--quiet")
    rows = json.loads(done.stdout)
    for row in rows:  # [[name, type, value], ...] (or {} for none): name -> value
        row["arguments"] = {arg[0]: arg[-1] for arg in row["arguments"] or []}
    return {row["name"]: row for row in rows}


def server_bindings(server: RabbitServer, amqp_url: str) -> set[tuple[str, str, str, str]]:
    """(source, destination kind, destination, routing key) of every binding in the vhost."""
    vhost = unquote(urlparse(amqp_url).path[1:])
    done = server.ctl("list_bindings", "-p", vhost, "source_name", "destination_kind",
                      "destination_name", "routing_key", "--formatter", "json", "--quiet")
    return {(b["source_name"], b["destination_kind"], b["destination_name"], b["routing_key"])
            for b in json.loads(done.stdout)}


# -- names ------------------------------------------------------------------------------------

def test_delay_routing_keys_spell_the_bits_and_escape_the_queue() -> None:
    exchange, key = topology.delay_target("a.b%c*#", 5)
    assert exchange == "celeriac.delay.37"
    words = key.split(".")
    assert len(words) == 39
    assert words[:38] == ["0"] * 35 + ["1", "0", "1"]
    assert words[38] == "a%2Eb%25c%2A%23"
    assert topology.delay_target("q", topology.MAX_DELAY_MS)[1] == "1." * 38 + "q"
    with pytest.raises(ConfigurationError, match=r"8\.7 years"):
        topology.delay_target("q", topology.MAX_DELAY_MS + 1)
    with pytest.raises(ValueError):
        topology.delay_target("q", 0)
    with pytest.raises(ConfigurationError, match="too long"):
        topology.delay_target("q" * 200, 1000)
    assert topology.publish_target("q", CLASSIC) == ("q", "q")
    assert topology.publish_target("q", QUORUM) == ("", "q")
    assert topology.dead_queue("q") == "q.dead"


# -- declares -----------------------------------------------------------------------------------

def test_the_ladder_and_quorum_queues_are_declared_as_designed_and_twice_is_fine(
        conn: AmqpConnection, rabbit_server: RabbitServer, amqp_url: str) -> None:
    started = time.monotonic()
    topology.declare_ladder(conn)
    first = time.monotonic() - started
    started = time.monotonic()
    topology.declare_ladder(conn)
    again = time.monotonic() - started
    print(f"declare_ladder: {first * 1000:.0f} ms, again {again * 1000:.0f} ms")
    topology.declare_queue(conn, "work", QUORUM)
    topology.declare_queue(conn, "work", QUORUM)
    topology.declare_queue(conn, "prio", CLASSIC, max_priority=9)
    topology.declare_queue(conn, "prio", CLASSIC, max_priority=9)
    queues = server_queues(rabbit_server, amqp_url)
    assert queues["work"]["type"] == "quorum" and queues["work"]["durable"]
    assert queues["work"]["arguments"] == {
        "x-queue-type": "quorum", "x-dead-letter-exchange": "celeriac.dead",
        "x-dead-letter-routing-key": "work", "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish", "x-delivery-limit": 100}
    assert queues["prio"]["type"] == "classic"
    assert queues["prio"]["arguments"] == {"x-max-priority": 9}
    assert queues["work.dead"]["type"] == queues["prio.dead"]["type"] == "classic"
    for k in (0, 5, 37):
        level = queues[f"celeriac.delay.{k}"]
        assert level["type"] == "quorum"
        assert level["arguments"]["x-message-ttl"] == 2**k
        assert level["arguments"]["x-dead-letter-exchange"] == (
            f"celeriac.delay.{k - 1}" if k else "celeriac.delay.deliver")
    bindings = server_bindings(rabbit_server, amqp_url)
    assert ("celeriac.dead", "queue", "work.dead", "work") in bindings
    assert ("celeriac.delay.deliver", "queue", "work", "*." * 38 + "work") in bindings
    assert ("prio", "queue", "prio", "prio") in bindings  # Celery's layout for classic
    assert ("celeriac.delay.37", "queue", "celeriac.delay.37", "1.#") in bindings
    assert ("celeriac.delay.37", "exchange", "celeriac.delay.36", "0.#") in bindings
    assert ("celeriac.delay.0", "exchange", "celeriac.delay.deliver", "*." * 37 + "0.#") in bindings
    assert sum(1 for b in bindings if b[0].startswith("celeriac.delay.") and b[1] == "exchange") == 38


def test_other_refusals_raise_and_the_control_channel_survives(conn: AmqpConnection) -> None:
    with pytest.raises(BrokerError, match="ACCESS_REFUSED"):
        topology.declare_queue(conn, "amq.reserved", QUORUM)  # the amq. prefix is the server's
    with pytest.raises(ConfigurationError, match="unknown queue type"):
        topology.declare_queue(conn, "x", "stream")
    topology.declare_queue(conn, "fine", QUORUM)
    assert topology.queue_ready_counts(conn, ["fine"]) == {"fine": 0}


CELERY_PRODUCER = textwrap.dedent("""
    import sys
    from celery import Celery
    app = Celery("probe", broker=sys.argv[1])
    print(app.send_task("tasks.add", (2, 3)).id)
""")


def celery_send(amqp_url: str) -> str:
    """Send ``tasks.add(2, 3)`` with Celery 5's own client (it declares queue ``celery``)."""
    python = compare_python()
    assert python is not None, "no venv with Celery: run ./scripts/test, or set CELERIAC_COMPARE_VENV"
    done = subprocess.run([str(python), "-c", CELERY_PRODUCER, amqp_url], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@needs_celery
def test_celerys_classic_queue_is_shared_and_quorum_falls_back_with_a_warning(
        conn: AmqpConnection, rabbit_server: RabbitServer, amqp_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # celeriac first (a worker started before any Celery producer): Celery's re-declare
    # on publish must then find exactly its own arguments, or it fails with 406.
    topology.declare_queue(conn, "celery", CLASSIC)
    celery_send(amqp_url)
    assert topology.queue_ready_counts(conn, ["celery"]) == {"celery": 1}
    with caplog.at_level(logging.WARNING, logger="celeriac.amqp"):
        topology.declare_queue(conn, "celery", CLASSIC)
    assert not caplog.records
    assert server_queues(rabbit_server, amqp_url)["celery"]["arguments"] == {}

    # Celery first, on a vhost of its own: then celeriac's quorum declare is refused by
    # the server; the queue is used as it is, with one warning naming the difference.
    other_url = rabbit_server.url(rabbit_server.vhost())
    celery_send(other_url)
    other = AmqpConnection(AmqpParams.from_url(other_url), heartbeat=10, patience=30)
    try:
        topology.declare_queue(other, "celery", CLASSIC)  # exactly Celery's: no complaint
        assert not caplog.records
        with caplog.at_level(logging.WARNING, logger="celeriac.amqp"):
            topology.declare_queue(other, "celery", QUORUM)
        (record,) = [r for r in caplog.records if "other arguments" in r.getMessage()]
        assert "'celery'" in record.getMessage() and "inequivalent arg" in record.getMessage()
        assert "x-queue-type" in record.getMessage()
        assert topology.queue_ready_counts(other, ["celery", "celery.dead"]) == {
            "celery": 1, "celery.dead": 0}
        celery_send(other_url)  # Celery's producer still works on it
        assert topology.queue_ready_counts(other, ["celery"]) == {"celery": 2}
        assert server_queues(rabbit_server, other_url)["celery"]["type"] == "classic"
    finally:
        other.close()


# -- the ladder ---------------------------------------------------------------------------------

def wait_ready(conn: AmqpConnection, queues: list[str], deadline: float) -> dict[str, float]:
    """When each queue first had a ready message (monotonic), polling until ``deadline``."""
    seen: dict[str, float] = {}
    while len(seen) < len(queues) and time.monotonic() < deadline:
        for queue, count in topology.queue_ready_counts(conn, queues).items():
            if count and queue not in seen:
                seen[queue] = time.monotonic()
        time.sleep(0.02)
    return seen


def test_delayed_messages_arrive_after_their_delay_in_exactly_their_queue(conn: AmqpConnection) -> None:
    topology.declare_ladder(conn)
    for queue in ("a.b", "b", "a%2Eb"):
        topology.declare_queue(conn, queue, QUORUM)
    sent = time.monotonic()
    conn.publish([Outgoing(routing_key=key, exchange=exchange, body=queue.encode(),
                           headers={"x-celeriac-queue": queue})
                  for queue, delay in (("a.b", 700), ("b", 300), ("a%2Eb", 1100))
                  for exchange, key in [topology.delay_target(queue, delay)]])
    assert topology.queue_ready_counts(conn, ["a.b", "b"]) == {"a.b": 0, "b": 0}
    seen = wait_ready(conn, ["a.b", "b", "a%2Eb"], sent + 30)
    assert seen.keys() == {"a.b", "b", "a%2Eb"}, "a delayed message did not arrive within 30 s"
    # Never early (the ladder holds 2**k ms per 1 bit); the upper bound is generous.
    assert seen["b"] - sent >= 0.3 and seen["a.b"] - sent >= 0.7 and seen["a%2Eb"] - sent >= 1.1
    print({queue: f"{(at - sent) * 1000:.0f} ms" for queue, at in seen.items()})
    generation = conn.subscribe(["a.b", "b", "a%2Eb"], prefetch=10)
    got: list[Incoming] = []
    while len(got) < 3:
        more = conn.take(10, 10)
        assert more, f"only {len(got)} of 3 deliveries"
        got.extend(more)
    assert sorted((d.queue, d.body) for d in got) == [
        ("a%2Eb", b"a%2Eb"), ("a.b", b"a.b"), ("b", b"b")]
    # One x-death entry per level that held it: one per 1 bit of the delay.
    hops = {d.queue: len(d.headers["x-death"]) for d in got}
    assert hops == {"b": bin(300).count("1"), "a.b": bin(700).count("1"),
                    "a%2Eb": bin(1100).count("1")}
    conn.settle(generation, acks=[d.delivery_tag for d in got])


def test_counts_and_purges_take_missing_queues_as_empty(conn: AmqpConnection) -> None:
    topology.declare_queue(conn, "p1", QUORUM)
    topology.declare_queue(conn, "p2", CLASSIC)
    conn.publish([Outgoing(routing_key="p1", body=b"1"), Outgoing(routing_key="p1", body=b"2"),
                  Outgoing(routing_key="p2", exchange="p2", body=b"3")])
    assert topology.queue_ready_counts(conn, ["nope", "p1", "gone", "p2"]) == {
        "nope": 0, "p1": 2, "gone": 0, "p2": 1}
    assert topology.purge_queues(conn, ["p1", "missing", "p2"]) == 3
    assert topology.queue_ready_counts(conn, ["p1", "p2"]) == {"p1": 0, "p2": 0}
    assert topology.purge_queues(conn, []) == 0
    # The control channel never saw the 404s: a plain call on it works.
    assert conn.call(lambda ch: ch.queue_declare("p1", passive=True).message_count) == 0
