"""JSON on the hot path: orjson where it means what the standard library means.

Every task crosses JSON several times inside celeriac: its message envelope is
parsed, a start line goes to the supervisor, and with ``-E`` three task events
are encoded. The standard library spends microseconds on each (a 700-byte
envelope takes about 5 us to parse, an event about 4 us to encode); orjson takes
a fraction of that. The two differ at the edges, so each function here falls
back to the standard library wherever orjson would answer differently:

* :func:`loads` -- orjson refuses ``NaN``, ``Infinity``, lone surrogates and
  numbers too large for a double, which ``json.loads`` accepts: those inputs are
  parsed again by ``json.loads``, which accepts them or raises its own error.
  orjson reads an integer beyond 64 bits as a float: callers use :func:`loads`
  only for data whose numbers are celeriac's own (message headers it defines,
  pipe lines, events), and :func:`celeriac.message.decode` re-parses an
  envelope that carries anything else with ``json.loads``.
* :func:`plain_ascii` -- compact ASCII JSON with the meaning of the standard library's
  (``ensure_ascii``, ``allow_nan=False``), or None where orjson's could differ: a value
  of another type than dict (str keys), list, tuple, str, int, float, bool and None
  (exact types: an ``IntEnum``, a ``str`` subclass, a UUID or a datetime has a meaning
  of its own there), a NaN or an infinity (orjson writes null), an integer beyond 64
  bits, text beyond ASCII. Floats may be spelled differently (``1e16`` for ``1e+16``):
  the same values read back.
* :func:`dumps` -- compact output, non-ASCII characters as UTF-8 (as
  ``ensure_ascii=False``), keys that are not strings turned into strings as
  ``json.dumps`` does; orjson refuses integers beyond 64 bits, for which the
  standard library's encoder is used. ``NaN`` becomes ``null`` (``json.dumps``
  writes ``NaN``, which no strict parser reads): use it for celeriac's own data,
  not for task arguments, which keep the standard library's meaning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

#: Dataclasses and datetimes go to ``default`` as they would with ``json.dumps``.
_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS
            | orjson.OPT_PASSTHROUGH_DATETIME)


def loads(data: bytes | str) -> Any:
    """Parse ``data``; ``ValueError`` (``json.JSONDecodeError``) if it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


#: Values :func:`plain_ascii` takes as they are, and the containers it looks into.
_LEAVES = frozenset({str, int, bool, type(None)})
#: Most values :func:`plain_ascii` looks at before it leaves a value to the standard library.
PLAIN_NODES = 200


def plain_ascii(value: Any) -> str | None:
    """``value`` as compact ASCII JSON by orjson, or None (see the module). A result record
    is a dozen small fields: the standard library's encoder took about 4 us for one."""
    stack, budget = [value], PLAIN_NODES
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is float:
            if item - item == 0.0:  # not NaN or an infinity, which orjson writes as null
                continue
            return None
        if kind is dict:
            stack.extend(item.values())  # a key that is not a str: orjson refuses it
        elif kind is list or kind is tuple:
            stack.extend(item)
        else:
            return None
        budget -= len(item)
        if budget < 0:
            return None
    try:
        text = orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits, a key that is not a str
        return None
    return text.decode("ascii") if text.isascii() else None


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as compact UTF-8 JSON; ``default`` converts what JSON has no type for
    (``str`` for events, whose data may hold anything); ``TypeError`` without it."""
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits, or what default cannot convert
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          default=default).encode()
