"""celeriac.fastjson, the envelope parser and result records: orjson's speed, the standard
library's meaning."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid

import pytest

from celeriac import serialization
from celeriac.backends.base import ResultRecord
from celeriac.exceptions import SerializationError
from celeriac.fastjson import PLAIN_NODES, dumps, loads, plain_ascii
from celeriac.message import decode, encode
from celeriac.states import SUCCESS

BIG = 2**70 + 1


@pytest.mark.parametrize("text", [
    '{"a": 1, "b": [1.5, null, true, "\\u00e9"]}',
    '{"a": NaN, "b": Infinity, "c": -Infinity}',  # refused by orjson, read by json
    '"\\ud800"',  # a lone surrogate: the same
    "[1e400]",  # a double's overflow: the same
    '{"k": 1, "k": 2}',
])
def test_loads_reads_what_json_loads_reads(text: str) -> None:
    for data in (text, text.encode()):
        got, want = loads(data), json.loads(text)
        assert repr(got) == repr(want)  # repr: NaN != NaN, and float vs int matters


@pytest.mark.parametrize("text", ["nope", "{", "", "[1,]"])
def test_loads_refuses_what_json_refuses_with_its_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads(text)


def test_dumps_is_compact_utf8_and_keeps_big_integers_and_key_conversion() -> None:
    assert dumps({"x": [1.5, None, "é"], 1: True}) == '{"x":[1.5,null,"é"],"1":true}'.encode()
    assert json.loads(dumps({"n": BIG})) == {"n": BIG}  # orjson refuses: json encodes it


def test_dumps_default_sees_what_json_default_sees() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    value = {"p": Point(1), "t": datetime.datetime(2026, 12, 3, 10, 0), "o": object}
    assert json.loads(dumps(value, default=str)) == json.loads(json.dumps(value, default=str))
    with pytest.raises(TypeError):
        dumps({"o": object()})


def test_a_big_integer_in_a_custom_header_survives_the_envelope_parser() -> None:
    wire = json.loads(encode("t", "id-1", [BIG], {"n": -BIG}, queue="q"))
    wire["headers"]["tenant"] = BIG
    wire["headers"]["stamps"] = {"n": BIG}
    message = decode(json.dumps(wire).encode())
    assert message.headers["tenant"] == BIG and message.headers["stamps"] == {"n": BIG}
    assert message.args == [BIG] and message.kwargs == {"n": -BIG}


def test_envelopes_parse_as_json_loads_parses_them() -> None:
    plain = encode("t", "id-1", [1, "é", 2.5], {"k": None}, queue="q", retries=3,
                   time_limit=1.5, priority=4)
    wire = json.loads(plain)
    wire["headers"]["retries"] = BIG  # absurd, but json.loads keeps it an integer
    odd = json.dumps(wire).encode()
    for data in (plain, odd):
        message = decode(data)
        assert message.headers == json.loads(data)["headers"]
    assert decode(odd).retries == BIG
    nan = json.loads(plain)
    nan["headers"]["timelimit"] = [math.nan, None]  # orjson refuses NaN: json reads it
    assert math.isnan(decode(json.dumps(nan).encode()).headers["timelimit"][0])


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


@pytest.mark.parametrize("value", [
    None, 0, -7, 2**63 - 1, 2**64 - 1, True, "text", "quote\" back\\ tab\t nul\x00", 1.5, 1e16,
    -0.0, 5e-324, [1, [2, [3, {"k": None}]]], (1, 2), {"a": {"b": []}}, {},
])
def test_plain_ascii_means_what_the_standard_library_writes(value: object) -> None:
    text = plain_ascii(value)
    assert text is not None and text.isascii()
    assert repr(json.loads(text)) == repr(json.loads(json.dumps(value, ensure_ascii=True)))


@pytest.mark.parametrize("value", [
    math.nan, [1, math.inf], {"x": -math.inf},  # orjson would write null
    uuid.UUID(int=1), Colour.RED, [Level.HIGH], Name("n"),  # a meaning of their own
    datetime.datetime(2026, 12, 5), decimal.Decimal("1.5"), b"raw", {1, 2},
    2**64, -(2**63) - 1,  # beyond 64 bits: orjson refuses them
    {1: "key not a str"}, "é", ["漢"],  # the standard library escapes these
    list(range(PLAIN_NODES + 1)), [[0] * 150, [0] * 150],  # too many values to look at
])
def test_plain_ascii_leaves_the_rest_to_the_standard_library(value: object) -> None:
    assert plain_ascii(value) is None


@pytest.mark.parametrize("result", [
    [1.25, None, "x"], uuid.UUID(int=5), datetime.datetime(2026, 12, 5, 1, 2), "é", 2**70,
    {"nested": {"k": [True, False]}},
])
def test_a_result_record_reads_back_the_same_whichever_encoder_wrote_it(result: object) -> None:
    record = ResultRecord(task_id="id-1", status=SUCCESS, result=result, name="t",
                          date_done=1733390000.123456, extra={"e": 1})
    text = record.to_json()
    assert text.isascii()
    assert ResultRecord.from_json(text, "test") == record
    assert json.loads(text) == json.loads(serialization.json_dumps(record.to_dict(),
                                                                   ascii_only=True))


def test_a_result_record_with_nan_is_still_refused() -> None:
    with pytest.raises(SerializationError):
        ResultRecord(task_id="id-1", status=SUCCESS, result=[math.nan]).to_json()
