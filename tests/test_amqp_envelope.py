"""celeriac's envelope <-> Celery's AMQP message (celeriac/brokers/amqp/envelope.py).

Round trips in memory and through a real RabbitMQ node (py-amqp's tables change some
types on the way), raw bodies, RabbitMQ's own headers stripped, and both directions
of Celery interop: a message Celery 5's producer sent is a task celeriac decodes, and
one celeriac sent is a task kombu decodes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import textwrap
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from conftest import compare_python, needs_celery

amqp = pytest.importorskip("amqp")

from celeriac import message  # noqa: E402
from celeriac.brokers.amqp import topology  # noqa: E402
from celeriac.brokers.amqp.connection import AmqpConnection  # noqa: E402
from celeriac.brokers.amqp.envelope import BODY_ENCODING_HEADER, RAW_HEADER, from_amqp, to_amqp  # noqa: E402
from celeriac.brokers.amqp.params import AmqpParams, Incoming, Outgoing  # noqa: E402
from celeriac.exceptions import MessageDecodeError  # noqa: E402
from celeriac.serialization import JSON, MSGPACK, PICKLE  # noqa: E402

TASK_ID = "0b1d3a9e-8f5c-4c1e-9d8a-5b6f7e8d9c0a"

#: Header values of every JSON type, nested, at the edges of what AMQP tables hold.
ODD_HEADERS: dict[str, Any] = {
    "none": None, "t": True, "f": False, "small": -5, "int32": 2**31 - 1, "big": 2**40,
    "min64": -(2**63), "max64": 2**63 - 1, "float": 0.1, "tiny": 5e-324, "whole": 2.0,
    "long": "x" * 100_000, "unicode": "é✓😀", "empty": "", "list": [], "dict": {},
    "nested": {"a": [1, {"b": None, "c": [True, 1.5, "s"]}], "d": {"e": {"f": -1}}},
    "stamps": {"k": ["v1", "v2"]}, "k" * 255: 1,
}


def envelopes() -> list[tuple[str, bytes]]:
    """Envelopes celeriac writes (and Celery's Redis form), by name."""
    def enc(**options: Any) -> bytes:
        return message.encode("tasks.add", TASK_ID, [2, {"x": [1.5, None]}], {"k": "é"},
                              queue="celery", **options)

    redis_form = json.loads(enc())
    redis_form["body"] = base64.b64encode(redis_form["body"].encode()).decode()
    redis_form["properties"]["body_encoding"] = "base64"  # as Celery's Redis transport sends JSON
    no_encoding = json.loads(enc())
    del no_encoding["properties"]["body_encoding"]
    return [
        ("json", enc()),
        ("priority-eta", enc(priority=9, eta=1_800_000_000.5, expires=1_800_000_100.0,
                             time_limit=30, soft_time_limit=20.5, retries=3, group="g", group_index=2)),
        ("msgpack", enc(serializer="msgpack")),
        ("pickle", enc(serializer="pickle")),
        ("gzip", enc(compression="gzip")),
        ("msgpack-bz2", enc(serializer="msgpack", compression="bzip2")),
        ("odd-headers", enc(extra_headers=ODD_HEADERS)),
        ("redis-base64-json", json.dumps(redis_form).encode()),
        ("no-body-encoding", json.dumps(no_encoding).encode()),
        # A lone surrogate: JSON escapes it, py-amqp writes it as bytes that are not UTF-8.
        ("surrogate", json.dumps({**json.loads(enc()), "headers": {
            **json.loads(enc())["headers"], "odd": "a\ud800b", "in": ["\udfff"]}}).encode()),
    ]


RAW = [b"\x00\xff", b"", b"{}", b"[1, 2]", b"{not json", b'{"headers": {}}',
       b'{"body": "x", "headers": {}, "properties": {}, "extra": 1}',
       b'{"body": "x", "headers": {}}',  # no properties: coming back it would have some
       b'{"body": "x", "headers": {"big": 123456789012345678901234567890}, "properties": {}}',
       b'{"body": "x", "headers": {"x-death": []}, "properties": {}}',
       b'{"body": "QR==", "headers": {}, "properties": {"body_encoding": "base64"}}',
       b'{"body": "x", "headers": {}, "properties": {"priority": 300}}',
       b'{"body": "x", "headers": {}, "properties": {"correlation_id": null}}',
       b'{"body": "x", "headers": {}, "properties": {"expiration": "100"}}',
       b'{"body": "\\ud800", "headers": {}, "properties": {}}',
       ("{" + '"body": "x", "headers": {"' + "k" * 256 + '": 1}, "properties": {}}').encode()]


def same(original: bytes, back: bytes, exchange: str = "", routing_key: str = "celery") -> None:
    """``back`` is ``original`` but for what the broker fills in (see envelope's docstring)."""
    want, got = json.loads(original), json.loads(back)
    want["properties"].pop("delivery_tag", None)
    want["properties"].setdefault("delivery_mode", 2)
    want["properties"]["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    assert got == want


def send_form(incoming: Incoming) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    return incoming.body, incoming.headers, incoming.properties


@pytest.mark.parametrize(("name", "body"), envelopes(), ids=[name for name, _ in envelopes()])
def test_envelopes_round_trip_in_memory(name: str, body: bytes) -> None:
    data, headers, properties = to_amqp(body)
    assert RAW_HEADER not in headers, "celeriac's own envelope must travel in Celery's form"
    assert properties["content_type"] == json.loads(body)["content-type"]
    back = from_amqp(data, headers, {"delivery_mode": 2, **properties}, exchange="", routing_key="celery")
    same(body, back)
    decoded = message.decode(back, {JSON, MSGPACK, PICKLE})
    assert (decoded.id, decoded.args, decoded.kwargs) == (TASK_ID, [2, {"x": [1.5, None]}], {"k": "é"})


def test_the_amqp_form_is_celerys() -> None:
    body = message.encode("tasks.add", TASK_ID, [2, 3], {}, queue="celery", priority=4)
    data, headers, properties = to_amqp(body)
    envelope = json.loads(body)
    assert data == envelope["body"].encode()
    assert headers == envelope["headers"]
    assert properties == {"content_type": "application/json", "content_encoding": "utf-8",
                          "correlation_id": TASK_ID, "reply_to": "", "delivery_mode": 2, "priority": 4}
    data, headers, _ = to_amqp(message.encode("t", TASK_ID, [b"\x00"], {}, queue="q", serializer="msgpack"))
    assert BODY_ENCODING_HEADER not in headers and data[:1] == b"\x93"  # msgpack's bytes, not base64


@pytest.mark.parametrize("body", RAW)
def test_other_bodies_travel_raw_and_come_back_byte_for_byte(body: bytes) -> None:
    data, headers, properties = to_amqp(body)
    assert (data, headers, properties) == (body, {RAW_HEADER: 1}, {})
    assert from_amqp(data, headers, {"delivery_mode": 2}, exchange="", routing_key="q") == body


def test_rabbitmqs_and_celeriacs_headers_are_stripped_and_foreign_types_made_json() -> None:
    headers: dict[Any, Any] = {
        "task": "t", "id": "i", "x-death": [{"count": 1}], "x-first-death-reason": "expired",
        "x-last-death-queue": "q", "x-delivery-count": 3, "x-acquired-count": 4,
        "x-celeriac-id": "m1", "x-celeriac-stamp": 1, "x-other": "kept",
        "dec": Decimal("12.50"), "whole": Decimal("3"), "when": datetime(2026, 12, 3, 14, 25),
        "blob": b"\xff\x00", "text": b"ok", "tuple": (1, 2), b"key": "bytes key"}
    back = json.loads(from_amqp(b"[[], {}, null]", headers, {"content_type": "application/json"},
                                exchange="x", routing_key="q"))
    assert back["headers"] == {"task": "t", "id": "i", "x-other": "kept", "dec": 12.5, "whole": 3,
                               "when": "2026-12-03T14:25:00", "blob": "\\xff\x00", "text": "ok",
                               "tuple": [1, 2], "key": "bytes key"}
    assert back["properties"] == {"body_encoding": "utf-8",
                                  "delivery_info": {"exchange": "x", "routing_key": "q"}}


def test_a_body_that_is_not_text_becomes_base64() -> None:
    back = json.loads(from_amqp(b"\x80\x81", {"task": "t", "id": "i"},
                                {"content_type": "application/json", "content_encoding": "utf-8"},
                                exchange="", routing_key="q"))
    assert (back["body"], back["properties"]["body_encoding"]) == ("gIE=", "base64")
    with pytest.raises(MessageDecodeError, match="undecodable"):
        message.decode(json.dumps(back).encode())


def test_an_unreadable_delivery_is_dead_lettered_with_its_reason_and_keeps_its_body() -> None:
    back = from_amqp(b"payload", {"task": "t", "id": "i"}, None,  # type: ignore[arg-type]
                     exchange="", routing_key="q")
    with pytest.raises(MessageDecodeError, match=r"unreadable.*AttributeError"):
        message.decode(back)
    assert message.peek_task_id(back) == ("t", "i")
    assert base64.b64decode(json.loads(back)["body"]) == b"payload"


# -- through a real node ------------------------------------------------------------------------

@pytest.fixture
def conn(amqp_url: str) -> Iterator[AmqpConnection]:
    connection = AmqpConnection(AmqpParams.from_url(amqp_url), heartbeat=10, patience=30)
    yield connection
    connection.close()


def take(conn: AmqpConnection, count: int) -> list[Incoming]:
    got: list[Incoming] = []
    while len(got) < count:
        more = conn.take(count - len(got), 10)
        assert more, f"{len(got)} of {count} deliveries arrived"
        got.extend(more)
    return got


def test_round_trips_through_rabbitmq(conn: AmqpConnection) -> None:
    topology.declare_queue(conn, "rt", topology.QUORUM)
    bodies = [body for _, body in envelopes()] + RAW
    outgoing = []
    for body in bodies:
        data, headers, properties = to_amqp(body)
        outgoing.append(Outgoing(routing_key="rt", body=data, headers=headers, properties=properties))
    conn.publish(outgoing)
    conn.subscribe(["rt"], prefetch=100)
    got = take(conn, len(bodies))
    for body, delivery in zip(bodies, got, strict=True):
        back = from_amqp(*send_form(delivery), exchange=delivery.exchange, routing_key=delivery.routing_key)
        if RAW_HEADER in delivery.headers:
            assert back == body
        else:
            same(body, back, "", "rt")
    assert len([d for d in got if RAW_HEADER in d.headers]) == len(RAW)


CELERY_PRODUCER = textwrap.dedent("""
    import sys
    from celery import Celery
    app = Celery("probe", broker=sys.argv[1])
    result = app.send_task("tasks.add", (2, 3), kwargs={"k": "é"}, priority=3,
                           headers={"custom": {"n": [1, None]}})
    print(result.id)
""")

KOMBU_READER = textwrap.dedent("""
    import json, sys
    from kombu import Connection
    with Connection(sys.argv[1]) as conn:
        msg = conn.default_channel.basic_get("celery", no_ack=True)
        msg = conn.default_channel.message_to_python(msg)
        print(json.dumps({"payload": msg.decode(), "headers": msg.headers,
                          "content_type": msg.content_type, "properties": msg.properties}))
""")


def compare(*args: str) -> str:
    python = compare_python()
    assert python is not None, "no venv with Celery: run ./scripts/test, or set CELERIAC_COMPARE_VENV"
    done = subprocess.run([str(python), "-c", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_celery
def test_a_message_from_celerys_producer_is_a_task_celeriac_decodes(conn: AmqpConnection,
                                                                   amqp_url: str) -> None:
    topology.declare_queue(conn, "celery", topology.CLASSIC)
    task_id = compare(CELERY_PRODUCER, amqp_url).strip()
    conn.subscribe(["celery"], prefetch=10)
    (delivery,) = take(conn, 1)
    assert delivery.properties["correlation_id"] == task_id
    data = from_amqp(*send_form(delivery), exchange=delivery.exchange, routing_key=delivery.routing_key)
    task = message.decode(data)
    assert (task.id, task.task, task.args, task.kwargs, task.priority) == (
        task_id, "tasks.add", [2, 3], {"k": "é"}, 3)
    assert task.headers["custom"] == {"n": [1, None]}
    assert task.properties["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    # And back to the AMQP form Celery sent, unchanged (a republish: retry, requeue, dead letter).
    body, headers, properties = to_amqp(data)
    assert body == delivery.body and headers == delivery.headers
    assert properties == {k: v for k, v in delivery.properties.items()}


@needs_celery
def test_a_message_celeriac_sent_is_a_task_kombu_decodes(conn: AmqpConnection, amqp_url: str) -> None:
    topology.declare_queue(conn, "celery", topology.CLASSIC)
    body = message.encode("tasks.add", TASK_ID, [2, 3], {"k": "é"}, queue="celery", priority=5,
                          extra_headers={"custom": {"n": [1, None]}})
    data, headers, properties = to_amqp(body)
    exchange, key = topology.publish_target("celery", topology.CLASSIC)
    conn.publish([Outgoing(routing_key=key, exchange=exchange, body=data,
                           headers={**headers, "x-celeriac-id": "m1"}, properties=properties)])
    seen = json.loads(compare(KOMBU_READER, amqp_url))
    assert seen["payload"] == [[2, 3], {"k": "é"},
                               {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    assert seen["content_type"] == "application/json"
    assert {k: v for k, v in seen["headers"].items() if k != "x-celeriac-id"} == json.loads(body)["headers"]
    assert (seen["properties"]["correlation_id"], seen["properties"]["priority"],
            seen["properties"]["delivery_mode"]) == (TASK_ID, 5, 2)
