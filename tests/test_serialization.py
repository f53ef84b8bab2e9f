"""celeriac.serialization: kombu's JSON type markers, and registered serializers.

The kombu fixtures below are literal output of kombu 5.7's ``kombu.utils.json.dumps``
(generated once in ``bench/.venv-compare``), and a whole message as Celery 5.7 put it
on its in-memory transport: this test needs no kombu to run. kombu's ``loads`` was also
checked, then, to read :data:`OURS` back to :data:`OURS_VALUE`.
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from celeriac import Celeriac, serialization
from celeriac.backends.base import ResultRecord
from celeriac.contrib.testing.worker import start_worker
from celeriac.exceptions import (
    BackendError,
    ConfigurationError,
    MessageDecodeError,
    SerializationError,
)
from celeriac.message import decode, encode
from celeriac.serialization import MarkerError, json_dumps, json_loads

AWARE = datetime(2026, 12, 3, 14, 25, 0, tzinfo=timezone(timedelta(hours=2)))
UUID = uuid.UUID("0b1d3a9e-8f5c-4c1e-9d8a-5b6f7e8d9c0a")

#: Each value, and what kombu's json.dumps writes for it.
KOMBU: dict[str, tuple[Any, str]] = {
    "datetime, naive": (datetime(2026, 12, 3, 14, 25, 0, 123456),
                        '{"__type__": "datetime", "__value__": "2026-12-03T14:25:00.123456"}'),
    "datetime, aware": (AWARE,
                        '{"__type__": "datetime", "__value__": "2026-12-03T14:25:00+02:00"}'),
    "datetime, UTC": (datetime(2026, 12, 3, 14, 25, tzinfo=timezone.utc),
                      '{"__type__": "datetime", "__value__": "2026-12-03T14:25:00+00:00"}'),
    "date": (date(2026, 12, 3), '{"__type__": "date", "__value__": "2026-12-03"}'),
    "time": (time(14, 25, 0, 500000), '{"__type__": "time", "__value__": "14:25:00.500000"}'),
    "decimal": (Decimal("12.50"), '{"__type__": "decimal", "__value__": "12.50"}'),
    "uuid": (UUID, '{"__type__": "uuid", "__value__": {"hex": "0b1d3a9e8f5c4c1e9d8a5b6f7e8d9c0a"}}'),
    "bytes, UTF-8": ("héllo".encode(), '{"__type__": "bytes", "__value__": "h\\u00e9llo"}'),
    "bytes, binary": (b"\x00\xff\xfe", '{"__type__": "base64", "__value__": "AP/+"}'),
}

#: A message Celery 5.7 sent (``app.send_task("tasks.echo", args=[datetime(..., UTC)],
#: kwargs={"amount": Decimal("12.50"), "id": UUID, "blob": b"\x00\xff"})``), as its
#: memory transport stored it: body in base64, as on Redis.
CELERY_MESSAGE = json.dumps({
    "body": "W1t7Il9fdHlwZV9fIjogImRhdGV0aW1lIiwgIl9fdmFsdWVfXyI6ICIyMDI2LTEyLTAzVDE0OjI1OjAwKzAw"
            "OjAwIn1dLCB7ImFtb3VudCI6IHsiX190eXBlX18iOiAiZGVjaW1hbCIsICJfX3ZhbHVlX18iOiAiMTIuNTAi"
            "fSwgImlkIjogeyJfX3R5cGVfXyI6ICJ1dWlkIiwgIl9fdmFsdWVfXyI6IHsiaGV4IjogIjBiMWQzYTllOGY1"
            "YzRjMWU5ZDhhNWI2ZjdlOGQ5YzBhIn19LCAiYmxvYiI6IHsiX190eXBlX18iOiAiYmFzZTY0IiwgIl9fdmFs"
            "dWVfXyI6ICJBUDg9In19LCB7ImNhbGxiYWNrcyI6IG51bGwsICJlcnJiYWNrcyI6IG51bGwsICJjaGFpbiI6"
            "IG51bGwsICJjaG9yZCI6IG51bGx9XQ==",
    "content-encoding": "utf-8", "content-type": "application/json",
    "headers": {"lang": "py", "task": "tasks.echo", "id": "c0ffee00-0000-4000-8000-000000000001",
                "shadow": None, "eta": None, "expires": None, "group": None,
                "group_index": None, "retries": 0, "timelimit": [None, None],
                "root_id": "c0ffee00-0000-4000-8000-000000000001", "parent_id": None,
                "argsrepr": "[datetime.datetime(2026, 12, 3, 14, 25, tzinfo=datetime.timezone.utc)]",
                "kwargsrepr": "{'amount': Decimal('12.50'), 'id': UUID('0b1d3a9e-8f5c-4c1e-9d8a-"
                              "5b6f7e8d9c0a'), 'blob': b'00ff'}",
                "origin": "gen29105@vm", "ignore_result": None, "replaced_task_nesting": 0,
                "stamped_headers": None, "stamps": {}},
    "properties": {"correlation_id": "c0ffee00-0000-4000-8000-000000000001",
                   "reply_to": "79934ba1-9247-30b3-bf80-6b8aa9c78d52", "delivery_mode": 2,
                   "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
                   "body_encoding": "base64", "delivery_tag": "921128fc-bb00-4768-ab38-91b9fd82d986"},
}).encode()

#: The body celeriac wrote for a message; kombu.utils.json.loads read it as OURS_VALUE.
OURS = ('[[{"__type__":"datetime","__value__":"2026-12-03T14:25:00+00:00"},{"__type__":"date",'
        '"__value__":"2026-12-03"},{"__type__":"time","__value__":"14:25:00"},{"__type__":"bytes",'
        '"__value__":"hé"}],{"amount":{"__type__":"decimal","__value__":"12.50"},"id":{"__type__":'
        '"uuid","__value__":{"hex":"0b1d3a9e8f5c4c1e9d8a5b6f7e8d9c0a"}},"blob":{"__type__":"base64",'
        '"__value__":"AP8="}},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]')
OURS_VALUE: list[Any] = [[datetime(2026, 12, 3, 14, 25, tzinfo=timezone.utc), date(2026, 12, 3), time(14, 25),
               "hé".encode()], {"amount": Decimal("12.50"), "id": UUID, "blob": b"\x00\xff"}]

VALUES = [value for value, _ in KOMBU.values()]


# -- markers --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", KOMBU)
def test_kombus_marker_decodes_to_the_value_and_ours_is_the_same_json(name: str) -> None:
    value, kombu = KOMBU[name]
    decoded = json_loads(kombu)
    assert decoded == value and type(decoded) is type(value)
    assert json.loads(json_dumps(value)) == json.loads(kombu)  # what kombu reads back
    if isinstance(value, datetime | time):
        assert decoded.tzinfo == value.tzinfo  # naive stays naive, the offset is kept


def test_our_message_body_is_the_one_kombu_read() -> None:
    data = encode("tasks.echo", "c0ffee00-0000-4000-8000-000000000002", OURS_VALUE[0],
                  OURS_VALUE[1], queue="celery")
    assert json.loads(data)["body"] == OURS
    assert json_loads(OURS)[:2] == OURS_VALUE


def test_a_celery_message_with_typed_arguments_decodes_here() -> None:
    message = decode(CELERY_MESSAGE)
    assert message.args == [datetime(2026, 12, 3, 14, 25, tzinfo=timezone.utc)]
    assert message.kwargs == {"amount": Decimal("12.50"), "id": UUID, "blob": b"\x00\xff"}


def nest(value: Any) -> Any:
    return {"list": [value, [value]], "dict": {"deeper": {"v": value}}, "plain": 1}


@pytest.mark.parametrize("value", VALUES, ids=list(KOMBU))
def test_every_type_round_trips_in_args_kwargs_and_embed(value: Any) -> None:
    data = encode("t", "id-1", [value, nest(value)], {"k": value, "n": nest(value)}, queue="q",
                  embed={"callbacks": [nest(value)], "errbacks": None, "chain": None,
                         "chord": None})
    message = decode(data)
    assert message.args == [value, nest(value)]
    assert message.kwargs == {"k": value, "n": nest(value)}
    assert message.embed["callbacks"] == [nest(value)]
    assert type(message.args[0]) is type(value)


@pytest.mark.parametrize("value", VALUES, ids=list(KOMBU))
def test_every_type_round_trips_in_a_stored_result(value: Any) -> None:
    record = ResultRecord("id-1", "SUCCESS", result=[value, nest(value)], name="t")
    stored = record.to_json()
    assert stored.isascii()  # results are escaped to ASCII
    assert ResultRecord.from_json(stored, "test").result == [value, nest(value)]
    assert ResultRecord.from_json(stored.encode(), "test").result == [value, nest(value)]


@pytest.mark.parametrize("text", [
    '{"__type__": "yaml", "__value__": "a: 1"}',  # unknown type (kombu raises on it)
    '{"__type__": "os.system", "__value__": ["true"]}',
    '{"__type__": 5, "__value__": "x"}',  # a tag that is no string
    '{"__type__": ["datetime"], "__value__": "2026-12-03"}',
    '{"__type__": "datetime", "__value__": "2026-12-03", "x": 1}',  # a third key
    '{"__type__": "datetime"}',
])
def test_a_dict_that_only_looks_like_a_marker_stays_a_dict(text: str) -> None:
    assert json_loads(text) == json.loads(text)
    body = f"[[{text}],{{}},{{}}]"
    data = json.dumps({"headers": {"task": "t", "id": "x"}, "body": body}).encode()
    assert decode(data).args == [json.loads(text)]


def test_an_escaped_key_is_still_a_marker_as_kombu_reads_it() -> None:
    assert json_loads('{"\\u005f_type__": "decimal", "__value__": "1.5"}') == Decimal("1.5")
    assert json_loads(b'{"__type__": "decimal", "__value__": "1.5"}') == Decimal("1.5")


@pytest.mark.parametrize("text, reason", [
    ('{"__type__": "datetime", "__value__": 5}', "must be a string"),
    ('{"__type__": "date", "__value__": "soon"}', "cannot read 'soon'"),
    ('{"__type__": "decimal", "__value__": "1e99999999"}', "cannot read"),
    ('{"__type__": "decimal", "__value__": "' + "1" * 5000 + '"}', "cannot read"),
    ('{"__type__": "uuid", "__value__": "0b1d3a9e"}', '{"hex": string}'),
    ('{"__type__": "uuid", "__value__": {"hex": "nope"}}', "cannot read"),
    ('{"__type__": "uuid", "__value__": {"int": 1}}', '{"hex": string}'),
    ('{"__type__": "base64", "__value__": "a b"}', "cannot read"),
    ('{"__type__": "bytes", "__value__": "\\ud800"}', "cannot read"),
])
def test_a_malformed_marker_is_an_error_that_says_why(text: str, reason: str) -> None:
    with pytest.raises(MarkerError, match=reason):
        json_loads(text)
    with pytest.raises(BackendError, match="corrupt result record"):
        ResultRecord.from_json(f'{{"task_id": "x", "result": {text}}}', "test")
    data = json.dumps({"headers": {"task": "t", "id": "x"}, "body": f"[[{text}],{{}},{{}}]"})
    with pytest.raises(MessageDecodeError, match="marker"):
        decode(data.encode())


def test_what_json_cannot_carry_is_still_refused() -> None:
    with pytest.raises(SerializationError, match="datetime, date, time, Decimal, UUID"):
        encode("t", "id", [object()], {}, queue="q")
    with pytest.raises(SerializationError):
        encode("t", "id", [float("nan")], {}, queue="q")
    with pytest.raises(SerializationError, match="Decimal out of range"):
        encode("t", "id", [Decimal("1e1000000")], {}, queue="q")  # would not decode
    assert json_dumps([Decimal("NaN"), Decimal("-Infinity")]).count("decimal") == 2


def test_kombus_json_hook_is_honoured_when_encoding() -> None:
    class Money:
        def __json__(self) -> dict[str, Any]:
            return {"amount": Decimal("1.50"), "currency": "EUR"}

    assert json_loads(json_dumps([Money()])) == [{"amount": Decimal("1.50"), "currency": "EUR"}]


def test_eager_calls_see_the_types_a_worker_would() -> None:
    app = Celeriac("eager", broker="memory://", backend="memory://", task_always_eager=True)

    @app.task
    def echo(*args: Any, **kwargs: Any) -> list[Any]:
        return [args, kwargs]

    assert echo.delay(*VALUES, k=AWARE).get() == [tuple(VALUES), {"k": AWARE}]


# -- registered serializers -----------------------------------------------------------------
def _reverse_dumps(value: Any) -> str:
    return json_dumps(value)[::-1]


def _reverse_loads(text: str) -> Any:
    return json_loads(text[::-1])


@pytest.fixture
def registered() -> Iterator[None]:
    serialization.register("reversed", _reverse_dumps, _reverse_loads,
                           "application/x-reversed-json")
    serialization.register("b85", lambda v: base64.b85encode(json_dumps(v).encode()),
                           lambda b: json_loads(base64.b85decode(b)), "application/x-b85",
                           "binary")
    try:
        yield
    finally:
        serialization.unregister("reversed")
        serialization.unregister("b85")


@pytest.mark.parametrize("name", ["reversed", "b85"])
def test_a_registered_serializer_runs_end_to_end_on_a_worker(registered: None, name: str) -> None:
    app = Celeriac("custom", broker="memory://", backend="memory://", task_serializer=name,
                   accept_content=["json", name])

    @app.task
    def echo(value: Any) -> Any:
        return value

    @app.task(serializer="json")
    def plain(value: Any) -> Any:
        return value

    with start_worker(app):
        result = echo.delay([AWARE, {"n": 1}])
        assert result.get(timeout=10) == [AWARE, {"n": 1}]
        assert plain.delay(UUID).get(timeout=10) == UUID
        assert echo.apply_async([2], serializer="json").get(timeout=10) == 2
    envelope = json.loads(encode("t", "i", [1], {}, queue="q", serializer=name))
    content_type = serialization.get(name).content_type
    assert envelope["content-type"] == content_type
    assert (envelope["content-encoding"], envelope["properties"]["body_encoding"]) == (
        ("binary", "base64") if name == "b85" else ("utf-8", "utf-8"))
    data = json.dumps(envelope).encode()
    with pytest.raises(MessageDecodeError, match="not accepted"):
        decode(data)
    assert decode(data, {content_type}).args == [1]


def test_accept_content_takes_names_or_content_types(registered: None) -> None:
    assert serialization.content_types(["json", "application/x-reversed-json", "reversed"]) == {
        "application/json", "application/x-reversed-json"}


def test_registering_is_checked(registered: None) -> None:
    with pytest.raises(ConfigurationError, match="built in"):
        serialization.register("json", str, str, "text/plain")
    with pytest.raises(ConfigurationError, match="built in"):
        serialization.unregister("pickle")
    with pytest.raises(ConfigurationError, match="already belongs"):
        serialization.register("other", str, str, "application/x-reversed-json")
    with pytest.raises(ConfigurationError, match="content_encoding"):
        serialization.register("other", str, str, "text/other", "rot-13-ish")
    with pytest.raises(ConfigurationError, match="unknown serializer 'nope'"):
        encode("t", "i", [], {}, queue="q", serializer="nope")
    with pytest.raises(ConfigurationError, match="task_serializer"):
        Celeriac("x", broker="memory://", backend="memory://", task_serializer="nope")
    assert Celeriac("x", broker="memory://", backend="memory://",
                    task_serializer="reversed").conf.task_serializer == "reversed"


def test_a_serializer_that_misbehaves_is_a_serialization_error(registered: None) -> None:
    def five(value: Any) -> Any:
        return 5

    serialization.register("broken", five, json_loads, "application/x-broken")
    try:
        with pytest.raises(SerializationError, match="returned int"):
            encode("t", "i", [1], {}, queue="q", serializer="broken")
    finally:
        serialization.unregister("broken")


def _outcome(encode: Any, value: Any) -> tuple[str, str]:
    try:
        return "ok", encode(value)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def test_json_dumps_writes_and_refuses_what_the_json_encoders_do() -> None:
    """json_dumps calls CPython's C encoder itself (without JSONEncoder's per-call set-up):
    the same text, and the same errors, as the JSONEncoders it stands for."""
    circular: list[Any] = []
    circular.append(circular)
    shared = [1, 2]
    values: list[Any] = [
        [], {}, "x", "\u00e9\ud800", 1, 2**80, -1.5, 1e300, True, None, (1, 2),
        [[1, {"a": [2, 3]}]], {"k": datetime(2026, 1, 1)}, {1: 2, 2.5: "x", None: 1, False: 0},
        uuid.UUID(int=5), Decimal("1.5"), b"bytes", b"\xff", [shared, shared],
        float("nan"), [float("inf")], object(), {"a": {1, 2}}, circular,
    ]
    for value in values:
        for ascii_only, encoder in ((False, serialization._ARGS_ENCODER),
                                    (True, serialization._RESULT_ENCODER)):
            ours = functools.partial(serialization.json_dumps, ascii_only=ascii_only)
            assert _outcome(ours, value) == _outcome(encoder.encode, value), (value, ascii_only)
    # An error part-way leaves nothing behind for the next call (markers are per call).
    assert serialization.json_dumps([shared, shared]) == "[[1,2],[1,2]]"
