from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from celeriac.exceptions import MessageDecodeError, SerializationError
from celeriac.message import JSON, PICKLE, decode, encode


def test_round_trip_keeps_protocol_v2_fields() -> None:
    eta = time.time() + 60
    data = encode("tasks.add", "id-1", [1, 2], {"z": "é"}, queue="io", eta=eta,
                  expires=eta + 10, retries=2, time_limit=30, soft_time_limit=20,
                  parent_id="p", root_id="r", priority=7)
    envelope = json.loads(data)
    headers = envelope["headers"]
    assert headers["task"] == "tasks.add" and headers["id"] == "id-1"
    assert headers["lang"] == "py" and headers["retries"] == 2
    assert headers["timelimit"] == [30, 20]
    assert envelope["properties"]["delivery_info"]["routing_key"] == "io"
    assert json.loads(envelope["body"]) == [[1, 2], {"z": "é"},
                                            {"callbacks": None, "errbacks": None,
                                             "chain": None, "chord": None}]
    message = decode(data)
    assert (message.task, message.id, message.args, message.kwargs) == (
        "tasks.add", "id-1", [1, 2], {"z": "é"})
    assert message.eta == pytest.approx(eta, abs=1e-3)
    assert message.expires == pytest.approx(eta + 10, abs=1e-3)
    assert message.timelimit == (30.0, 20.0)
    assert (message.root_id, message.parent_id, message.priority) == ("r", "p", 7)


def test_unserialisable_argument_is_a_clear_error() -> None:
    with pytest.raises(SerializationError, match=r"cannot be encoded as JSON.*object"):
        encode("t", "id", [object()], {}, queue="q")


@pytest.mark.parametrize("data, reason", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "envelope"),
    (json.dumps({"headers": {"id": "x"}, "body": "[[],{},{}]"}).encode(), "'task'"),
    (json.dumps({"headers": {"task": "t", "id": "x"}, "body": "[1]"}).encode(), "body must be"),
    (json.dumps({"headers": {"task": "t", "id": "x", "eta": "soon"},
                 "body": "[[],{},{}]"}).encode(), "ISO 8601"),
    (json.dumps({"headers": {"task": "t", "id": "x", "retries": -1},
                 "body": "[[],{},{}]"}).encode(), "retries"),
])
def test_malformed_messages_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MessageDecodeError, match=reason):
        decode(data)


def test_pickle_is_refused_unless_accepted() -> None:
    data = encode("t", "id", [{1, 2}], {}, queue="q", serializer="pickle")
    with pytest.raises(MessageDecodeError, match="not accepted"):
        decode(data)
    assert decode(data, {JSON, PICKLE}).args == [{1, 2}]


def test_celery_style_base64_json_body_is_understood() -> None:
    body = base64.b64encode(json.dumps([[1], {}, {}]).encode()).decode()
    data = json.dumps({"headers": {"task": "t", "id": "x"}, "body": body,
                       "content-type": JSON, "properties": {"body_encoding": "base64"}}).encode()
    assert decode(data).args == [1]


def test_a_template_stamps_independent_messages_as_build_writes_them() -> None:
    """A MessageTemplate (what apply_many uses for equal options) stamps each message with
    its own id, arguments and containers, byte for byte what build() writes for it."""
    from celeriac.message import MessageTemplate, build

    options: dict[str, Any] = dict(
        queue="q", eta=time.time() + 60, expires=time.time() + 120, retries=2, time_limit=30.0,
        soft_time_limit=20.0, root_id=None, parent_id="p-1", group="g-1", priority=3,
        ignore_result=True, group_index=4, compression="zlib", extra_headers={"x-trace": "t"})
    template = MessageTemplate("t.add", **options)
    first = template.stamp("id-1", (1, 2), {"k": "v"})
    second = template.stamp("id-2", [3], {})
    assert first.dumps() == build("t.add", "id-1", (1, 2), {"k": "v"}, **options).dumps()
    assert second.dumps() == build("t.add", "id-2", [3], {}, **options).dumps()
    assert decode(first.dumps(), {JSON}).args == [1, 2]
    for header in ("id", "root_id"):
        assert (first.headers[header], second.headers[header]) == ("id-1", "id-2")
    assert first.properties["correlation_id"] == "id-1" != second.properties["delivery_tag"]
    # A hook that changes one message's parts leaves the others and the template alone.
    first.headers["timelimit"][0] = 1.0
    first.properties["delivery_info"]["routing_key"] = "elsewhere"
    first.embed["callbacks"] = ["x"]
    third = template.stamp("id-3", (), {})
    assert second.headers["timelimit"] == third.headers["timelimit"] == [30.0, 20.0]
    assert third.properties["delivery_info"]["routing_key"] == "q"
    assert second.embed["callbacks"] is None is third.embed["callbacks"]
