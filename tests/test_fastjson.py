"""celeriac.fastjson and the envelope parser: orjson's speed, the standard library's meaning."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math

import pytest

from celeriac.fastjson import dumps, loads
from celeriac.message import decode, encode

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
