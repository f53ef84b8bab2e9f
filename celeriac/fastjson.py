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


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as compact UTF-8 JSON; ``default`` converts what JSON has no type for
    (``str`` for events, whose data may hold anything); ``TypeError`` without it."""
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits, or what default cannot convert
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          default=default).encode()
