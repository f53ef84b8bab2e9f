"""Serializers: kombu's JSON type markers, and the registry of named serializers.

**JSON markers.** JSON has no date, decimal, UUID or bytes, so kombu (under Celery)
writes each such value as a two-key object, and celeriac writes and reads the same::

    {"__type__": "datetime", "__value__": "2026-12-03T14:25:00+00:00"}   # isoformat()
    {"__type__": "date",     "__value__": "2026-12-03"}
    {"__type__": "time",     "__value__": "14:25:00.500000"}
    {"__type__": "decimal",  "__value__": "12.50"}                       # str()
    {"__type__": "uuid",     "__value__": {"hex": "0b1d3a9e..."}}
    {"__type__": "bytes",    "__value__": "text"}      # bytes that are UTF-8
    {"__type__": "base64",   "__value__": "AAEC/w=="}  # any other bytes

so a datetime argument sent by Celery reaches a celeriac task as a datetime, and back.
Decoding knows exactly these seven tags and builds the value from its text with the
type's own parser: nothing named by the data is ever imported or called (a decoder that
did was CVE-2021-23727). An object with those two keys and any other tag stays a plain
dict (kombu raises on it instead); a known tag with a value its parser refuses raises
:class:`MarkerError`, which a worker turns into a dead letter with the reason.

**Speed.** Every message body and every result goes through :func:`json_dumps` and
:func:`json_loads`. The encoders are built once (``json.dumps`` with keyword arguments
builds a new encoder per call, half its time on a small body), and types JSON lacks go
through ``default=``, which plain values never reach. Decoding uses the plain C parser
unless the text contains ``__type__`` or a ``\\u00`` escape (how a key could spell it
otherwise): only then does the object hook run on every object.

**Registry.** A serializer is a name, an encoder, a decoder, a content type and a
content encoding, as in kombu: ``register("yaml", yaml.safe_dump, yaml.safe_load,
"application/x-yaml")`` makes ``serializer="yaml"`` / ``task_serializer = "yaml"``
work, and a worker decodes such messages when ``accept_content`` lists ``"yaml"`` (or
its content type). ``json`` and ``pickle`` are built in; pickle is only used where
``accept_content`` lists it.

**msgpack** is registered as kombu registers it (``application/x-msgpack``, binary,
``packb(use_bin_type=True)`` / ``unpackb(raw=False)``) when the ``msgpack`` package is
installed (``pip install 'celeriac[msgpack]'``). Like kombu's, it carries what
msgpack itself knows: None, bool, int (64 bits), float, str, bytes, lists (a tuple
arrives as a list) and dicts with str or bytes keys; no datetime, Decimal or UUID
(kombu adds no markers to msgpack), so such an argument is refused when sent. Without
the package, choosing it is an error that names the extra.
"""

from __future__ import annotations

import base64
import codecs
import json
import pickle
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from celeriac.exceptions import ConfigurationError

JSON = "application/json"
PICKLE = "application/x-python-serialize"
MSGPACK = "application/x-msgpack"


class MarkerError(ValueError):
    """A ``{"__type__", "__value__"}`` object of a known type whose value is not one."""


# -- JSON markers -------------------------------------------------------------------------
def _marker(tag: str, value: Any) -> dict[str, Any]:
    return {"__type__": tag, "__value__": value}


def to_marker(value: Any) -> Any:
    """The ``default=`` hook of the JSON encoders: the marker of a type JSON lacks
    (``json.dumps(value, default=to_marker)`` writes what :func:`json_dumps` writes).

    ``datetime`` is tested before ``date`` (a datetime is a date). ``__json__`` is
    kombu's hook for a class to give its own JSON form (encoding only: nothing reads it
    back as that class).
    """
    if isinstance(value, datetime):
        return _marker("datetime", value.isoformat())
    if isinstance(value, date):
        return _marker("date", value.isoformat())
    if isinstance(value, time):
        return _marker("time", value.isoformat())
    if isinstance(value, Decimal):
        return _marker("decimal", _checked_decimal(value))
    if isinstance(value, uuid.UUID):
        return _marker("uuid", {"hex": value.hex})
    if isinstance(value, bytes):
        try:
            return _marker("bytes", value.decode("utf-8"))
        except UnicodeDecodeError:
            return _marker("base64", base64.b64encode(value).decode("ascii"))
    reducer = getattr(value, "__json__", None)
    if reducer is not None:
        return reducer()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _text(tag: str, value: Any) -> str:
    if not isinstance(value, str):
        raise MarkerError(f"{tag!r} marker: __value__ must be a string, got {type(value).__name__}")
    return value


def _parse(tag: str, parser: Callable[[str], Any], value: Any) -> Any:
    text = _text(tag, value)
    try:
        return parser(text)
    except (ValueError, InvalidOperation):  # UnicodeEncodeError and binascii.Error are ValueErrors
        raise MarkerError(f"{tag!r} marker: cannot read {text[:100]!r}") from None


#: Longest decimal text read, and the largest exponent: what the default decimal context
#: computes with (``Decimal`` itself reads 1e999999999999999999, and ``int()`` of it
#: would fill the memory of the task that received it).
DECIMAL_DIGITS, DECIMAL_EXPONENT = 4096, 999_999


def _checked_decimal(number: Decimal) -> str:
    """``str(number)``, or ``ValueError`` for one :func:`_decimal` would refuse to read
    back: better to refuse it when sent than to dead-letter it when received."""
    text = str(number)
    if len(text) > DECIMAL_DIGITS or (number.is_finite() and abs(number.adjusted())
                                      > DECIMAL_EXPONENT):
        raise ValueError(f"Decimal out of range for JSON: {text[:100]}")
    return text


def _decimal(text: str) -> Decimal:
    if len(text) > DECIMAL_DIGITS:
        raise ValueError("too long")
    number = Decimal(text)
    if number.is_finite() and abs(number.adjusted()) > DECIMAL_EXPONENT:
        raise ValueError("exponent out of range")
    return number


def _uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, dict) or value.keys() != {"hex"}:
        raise MarkerError("'uuid' marker: __value__ must be {\"hex\": string}")
    return _parse("uuid", lambda text: uuid.UUID(hex=text), value["hex"])  # type: ignore[no-any-return]


#: The fixed registry of marker tags: each builds its value with the type's own parser.
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": lambda v: _parse("datetime", datetime.fromisoformat, v),
    # kombu reads a date through datetime.fromisoformat, so "2026-12-03T10:00" is a date too.
    "date": lambda v: _parse("date", lambda text: datetime.fromisoformat(text).date(), v),
    "time": lambda v: _parse("time", time.fromisoformat, v),
    "decimal": lambda v: _parse("decimal", _decimal, v),
    "uuid": _uuid,
    "bytes": lambda v: _parse("bytes", lambda text: text.encode("utf-8"), v),
    "base64": lambda v: _parse("base64", lambda text: base64.b64decode(text, validate=True), v),
}
MARKER_TYPES = frozenset(_DECODERS)


def _object_hook(obj: dict[str, Any]) -> Any:
    """A marker of a known tag as its value; any other object as itself."""
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        tag = obj["__type__"]
        if type(tag) is str and tag in _DECODERS:
            return _DECODERS[tag](obj["__value__"])
    return obj


#: Task arguments: ``ensure_ascii=False`` (the body is text in a UTF-8 envelope) and no
#: NaN or infinity, which other readers refuse.
_ARGS_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                                 default=to_marker)
#: Results: escaped to ASCII, so a lone surrogate in a string is stored as ``\\ud800``
#: (SQLite and Redis refuse it raw, and a batch of results would fail with it).
_RESULT_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=to_marker)
_DECODER = json.JSONDecoder(object_hook=_object_hook)
_PLAIN_DECODER = json.JSONDecoder()
#: CPython's C encoder, which both JSONEncoders above end in (None without the _json module).
_C_ENCODER: Callable[..., Callable[[Any, int], Iterable[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None)
_STRING = json.encoder.encode_basestring
_ASCII_STRING = json.encoder.encode_basestring_ascii


def json_dumps(value: Any, *, ascii_only: bool = False) -> str:
    """``value`` as compact JSON, with markers for the registry's types.

    ``TypeError`` for a value of another type, ``ValueError`` for NaN or infinity.
    ``ascii_only`` escapes everything beyond ASCII (results use it).
    """
    if _C_ENCODER is None:
        return (_RESULT_ENCODER if ascii_only else _ARGS_ENCODER).encode(value)
    # What the encoders above do, without the setup JSONEncoder.iterencode repeats in
    # Python on every call (a closure and the C encoder's nine arguments): a third of
    # the time of encoding a message's small body. A fresh markers dict each call, as
    # there: the circular-reference check must not see another thread's values.
    encoder = _C_ENCODER({}, to_marker, _ASCII_STRING if ascii_only else _STRING, None, ":", ",",
                         False, False, False)
    return "".join(encoder(value, 0))


def json_loads(text: str | bytes) -> Any:
    """Parse JSON, turning markers of the registry's types into values.

    ``ValueError`` when ``text`` is not JSON (``json.JSONDecodeError``) or holds a
    malformed marker (:class:`MarkerError`); ``RecursionError`` when nested too deeply.
    """
    if isinstance(text, bytes):
        if b"__type__" not in text and b"\\u00" not in text:
            return json.loads(text)
        text = text.decode("utf-8")
    if "__type__" in text or "\\u00" in text:
        return _DECODER.decode(text)
    return _PLAIN_DECODER.decode(text)


# -- the registry -------------------------------------------------------------------------
@dataclass(frozen=True)
class Serializer:
    """A named way to turn a message body into text or bytes and back."""

    name: str
    #: Value -> ``str`` (or ``bytes`` in ``content_encoding``), or bytes when ``binary``.
    encoder: Callable[[Any], str | bytes]
    #: The inverse: given ``str``, or ``bytes`` when :attr:`binary`.
    decoder: Callable[[Any], Any]
    content_type: str
    content_encoding: str = "utf-8"

    @property
    def binary(self) -> bool:
        """Bytes, carried as base64 in the JSON envelope (as kombu's Redis transport does)."""
        return self.content_encoding == "binary"


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


_BUILTIN = {
    "json": Serializer("json", json_dumps, json_loads, JSON),
    "pickle": Serializer("pickle", _pickle_dumps, pickle.loads, PICKLE, "binary"),
}
#: Serializers kombu registers that need a package: name -> (content type, the extra
#: that installs it), for the error when it is missing.
_NEEDS_EXTRA = {"msgpack": (MSGPACK, "msgpack")}


def _optional() -> dict[str, Serializer]:
    """kombu's msgpack serializer, when the package is there. Registered, not built in:
    ``register("msgpack", ...)`` may replace it, as in kombu."""
    try:
        import msgpack
    except ImportError:
        return {}

    def pack(value: Any) -> bytes:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]

    def unpack(data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False)

    return {"msgpack": Serializer("msgpack", pack, unpack, MSGPACK, "binary")}


_REGISTRY: dict[str, Serializer] = {**_BUILTIN, **_optional()}
_BY_CONTENT_TYPE: dict[str, Serializer] = {s.content_type: s for s in _REGISTRY.values()}


def missing(name_or_type: str) -> str | None:
    """Why a serializer kombu has (by name or content type) is not registered here --
    its package is not installed -- or None."""
    for name, (content_type, extra) in _NEEDS_EXTRA.items():
        if name_or_type in (name, content_type) and name not in _REGISTRY:
            return (f"serializer {name!r} needs the {extra} package: "
                    f"pip install 'celeriac[{extra}]'")
    return None


def register(name: str, encoder: Callable[[Any], str | bytes], decoder: Callable[[Any], Any],
             content_type: str, content_encoding: str = "utf-8") -> None:
    """Register a serializer (kombu's ``kombu.serialization.register`` signature).

    Use its ``name`` in ``task_serializer``, ``serializer=`` and ``accept_content``.
    ``content_encoding`` ``"binary"``: ``encoder`` returns bytes and ``decoder`` is
    given bytes; else text in that encoding. Register it in the module that defines the
    app, so that senders and every worker process know it. ``json`` and ``pickle`` are
    celeriac's own and cannot be replaced: a worker's safety rests on what they mean.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError("a serializer's name must be a non-empty string")
    if name in _BUILTIN:
        raise ConfigurationError(f"serializer {name!r} is built in and cannot be replaced")
    if not callable(encoder) or not callable(decoder):
        raise ConfigurationError(f"serializer {name!r}: encoder and decoder must be callables")
    if not isinstance(content_type, str) or not content_type:
        raise ConfigurationError(f"serializer {name!r}: content_type must be a non-empty string")
    owner = _BY_CONTENT_TYPE.get(content_type)
    if owner is not None and owner.name != name:
        raise ConfigurationError(f"content type {content_type!r} already belongs to serializer "
                                 f"{owner.name!r}")
    try:
        known = content_encoding == "binary" or bool(codecs.lookup(content_encoding))
    except (LookupError, TypeError):
        known = False
    if not known:
        raise ConfigurationError(f"serializer {name!r}: unknown content_encoding "
                                 f"{content_encoding!r} ('binary' or a text encoding)")
    unregister(name)
    serializer = Serializer(name, encoder, decoder, content_type, content_encoding)
    _REGISTRY[name] = serializer
    _BY_CONTENT_TYPE[content_type] = serializer


def unregister(name: str) -> None:
    """Forget a registered serializer (a built-in one stays); no error if unknown."""
    if name in _BUILTIN:
        raise ConfigurationError(f"serializer {name!r} is built in and cannot be removed")
    serializer = _REGISTRY.pop(name, None)
    if serializer is not None:
        _BY_CONTENT_TYPE.pop(serializer.content_type, None)


def get(name: str) -> Serializer:
    """The serializer called ``name``; :class:`ConfigurationError` if none is."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(missing(name) or f"unknown serializer {name!r} (known: "
                                 f"{', '.join(sorted(_REGISTRY))})") from None


def by_content_type(content_type: str) -> Serializer | None:
    """The serializer that writes ``content_type``, if one is registered."""
    return _BY_CONTENT_TYPE.get(content_type)


def names() -> list[str]:
    """The names of every registered serializer, sorted."""
    return sorted(_REGISTRY)


def content_types(accept: Iterable[str]) -> set[str]:
    """The content types an ``accept_content`` list means: each entry a serializer name
    or a content type (Celery takes both)."""
    return {_REGISTRY[entry].content_type if entry in _REGISTRY else entry for entry in accept}


class ContentTypes(Mapping[str, str]):
    """A live, read-only view name -> content type of the registry (``CONTENT_TYPES``)."""

    def __getitem__(self, name: str) -> str:
        return _REGISTRY[name].content_type

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)
