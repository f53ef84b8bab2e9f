"""celeriac's stored message (the JSON envelope) <-> Celery's AMQP message.

Every celeriac broker stores one JSON envelope per message (``docs/protocol.md``). On
RabbitMQ a message must instead look exactly as kombu's py-amqp transport sends it, so
that Celery producers, Celery workers and celeriac all read each other's messages
(design §2, §5): the body is the serialized payload's bytes (base64 undone), the
envelope's content type, content encoding, ``correlation_id``, ``reply_to``,
``priority`` and ``delivery_mode`` are the AMQP properties of the same names, and the
task headers are the application headers. :func:`to_amqp` converts on publish,
:func:`from_amqp` on fetch.

**Exact or raw.** A body that is not an envelope this form carries exactly (arbitrary
bytes, JSON of another shape, a property AMQP has no room for -- a ``correlation_id``
over 255 bytes, an integer header beyond 64 bits) travels unchanged with the header
``x-celeriac-raw: 1`` and comes back byte for byte: celeriac's workers still read it,
only a Celery worker would not. For every envelope celeriac writes,
``json.loads(from_amqp(*to_amqp(b)))`` equals ``json.loads(b)`` except what the
broker fills in on delivery, in ``properties``:

* ``delivery_info`` is ``{"exchange", "routing_key"}`` as the caller of :func:`from_amqp`
  passes them (the broker passes the queue's, not a ladder copy's routing key);
* ``delivery_tag`` is dropped (AMQP's is a per-channel number the broker keeps itself);
* ``delivery_mode`` is the AMQP one (2) also when the envelope had none.

``body_encoding`` is not sent: :func:`from_amqp` infers base64 from a ``binary``
content encoding, a ``compression`` header or a body that is not UTF-8 (so Celery's
pickle and msgpack messages become celeriac's form), and the header
``x-celeriac-body-encoding`` carries it in the rare envelope where that guess would be
wrong (a base64 JSON body as Celery's Redis transport writes it).

**Headers.** py-amqp writes JSON's types into AMQP tables and reads back the same
types, except a string with a lone surrogate (read as bytes: decoded back here) and
types only foreign producers send (decimals, timestamps, byte arrays: made JSON here).
RabbitMQ's own headers (``x-death``, ``x-first-death-*``, ``x-last-death-*``,
``x-delivery-count``, ``x-acquired-count``) and celeriac's ``x-celeriac-*`` are not
copied into the envelope: they are the broker's business (it reads them from the
delivery), and ``x-death`` would otherwise grow with every ladder hop and retry.

**Never raises on fetch.** A delivery that cannot be made an envelope (which should not
happen: every AMQP value has a JSON form here) comes back as an envelope whose content
type names the reason, which the worker refuses and dead-letters with that reason, the
original body kept (base64).

Speed (measured: a 771-byte task envelope with the 16 protocol headers, Python 3.11,
best of 5 x 20,000 on the loaded 2-core machine): ``to_amqp`` 5.9 µs per message (2.5
of them parsing the JSON, as the worker does), ``from_amqp`` 4.8 µs.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

from celeriac.message import _OWN_HEADERS, _parse_envelope

log = logging.getLogger("celeriac.amqp")

#: Header of a message sent as it was given (not a celeriac envelope).
RAW_HEADER = "x-celeriac-raw"
#: Header with the envelope's ``body_encoding`` when :func:`from_amqp` would guess wrong
#: (None: the envelope had none).
BODY_ENCODING_HEADER = "x-celeriac-body-encoding"
#: Content type of an envelope made from a delivery that could not be read (the worker
#: refuses it, and its reason, after a ``;``, says why).
UNREADABLE = "application/x-celeriac-unreadable"

_ENVELOPE_KEYS = frozenset({"body", "content-type", "content-encoding", "headers", "properties"})
#: Envelope properties the broker fills in on delivery (not sent).
_DELIVERY_PROPERTIES = frozenset({"delivery_info", "delivery_tag", "body_encoding"})
_STRIPPED = frozenset({"x-death", "x-delivery-count", "x-acquired-count"})
_STRIPPED_PREFIXES = ("x-first-death-", "x-last-death-", "x-celeriac-")
_SHORT_STRING = 255  # bytes: AMQP short strings (string properties, table keys)
_INT64 = 2**63
_SCALARS = frozenset({str, float, bool, type(None)})
#: What JSON holds as it is (integers: any size, on the way in only).
_PLAIN = frozenset({*_SCALARS, int})
_ABSENT: Any = object()
#: Header names :func:`celeriac.message.build` writes: known to fit as table keys.
_PROTOCOL_HEADERS = _OWN_HEADERS


def stripped(header: str) -> bool:
    """True for the headers RabbitMQ or celeriac's broker add (not the task's)."""
    return header in _STRIPPED or header.startswith(_STRIPPED_PREFIXES)


# -- publish ------------------------------------------------------------------------------

def to_amqp(body: bytes) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """(AMQP body, application headers, other AMQP properties) for a stored message.

    The headers dict is the caller's to extend (the broker adds its ``x-celeriac-*``).
    """
    try:
        converted = _envelope_to_amqp(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, bad base64, too deep
        converted = None
    if converted is None:
        return body, {RAW_HEADER: 1}, {}
    return converted


def _envelope_to_amqp(body: bytes) -> tuple[bytes, dict[str, Any], dict[str, Any]] | None:
    """The AMQP form, or None when it would not carry the envelope exactly."""
    if body[:1] != b"{":
        return None
    envelope = _parse_envelope(body.decode("utf-8"))  # as the worker reads it (big integers)
    if not isinstance(envelope, dict) or not _ENVELOPE_KEYS.issuperset(envelope):
        return None
    headers, properties, text = envelope.get("headers"), envelope.get("properties"), envelope.get("body")
    if type(headers) is not dict or type(properties) is not dict or type(text) is not str:
        return None
    amqp_properties = _amqp_properties(envelope, properties)
    if amqp_properties is None or not _table_fits(headers, top=True):
        return None
    encoding = properties.get("body_encoding", _ABSENT)
    if encoding == "base64":
        data = base64.b64decode(text, validate=True)
        if base64.b64encode(data) != text.encode("ascii"):
            return None  # not canonical base64: it would not come back the same
    elif encoding == "utf-8" or encoding is _ABSENT:
        data = text.encode("utf-8")
    else:
        return None
    if encoding != _guess_encoding(data, envelope.get("content-encoding"), headers):
        headers[BODY_ENCODING_HEADER] = None if encoding is _ABSENT else encoding
    return data, headers, amqp_properties


def _amqp_properties(envelope: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any] | None:
    """The AMQP properties of an envelope; None if one has no exact AMQP form."""
    amqp_properties: dict[str, Any] = {}
    for key, value in properties.items():
        if key in _DELIVERY_PROPERTIES:
            continue
        if key == "priority":
            if type(value) is not int or not 0 <= value <= 255:
                return None
        elif key == "delivery_mode":
            if type(value) is not int or value not in (1, 2):
                return None
        elif key not in ("correlation_id", "reply_to") or not _short_string(value):
            return None  # a property AMQP has no place for, or no room
        amqp_properties[key] = value
    for field, key in (("content-type", "content_type"), ("content-encoding", "content_encoding")):
        value = envelope.get(field, _ABSENT)
        if value is not _ABSENT:
            if not _short_string(value):
                return None
            amqp_properties[key] = value
    return amqp_properties


def _short_string(value: Any) -> bool:
    """True for a string AMQP carries as a short string, read back the same (strict UTF-8:
    py-amqp fails the whole delivery on a property that is not)."""
    return type(value) is str and ((len(value) <= _SHORT_STRING and value.isascii())
                                   or len(value.encode("utf-8")) <= _SHORT_STRING)


def _table_fits(table: dict[str, Any], top: bool = False) -> bool:
    """True if py-amqp writes ``table`` as an AMQP table that reads back the same."""
    for key, value in table.items():
        if key not in _PROTOCOL_HEADERS and not _key_fits(key, top):
            return False
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is int:
            if not -_INT64 <= value < _INT64:
                return False
        elif not _value_fits(value):
            return False
    return True


def _key_fits(key: Any, top: bool) -> bool:
    if type(key) is not str or (not (len(key) <= _SHORT_STRING and key.isascii())
                                and len(key.encode("utf-8", "surrogatepass")) > _SHORT_STRING):
        return False
    return not (top and key.startswith("x-") and stripped(key))  # from_amqp would drop those


def _value_fits(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return bool(-_INT64 <= value < _INT64)
    if kind is list:
        return all(type(item) in _SCALARS or _value_fits(item) for item in value)
    if kind is dict:
        return _table_fits(value)
    return kind in _SCALARS


def _guess_encoding(data: bytes, content_encoding: Any, headers: Mapping[str, Any]) -> str:
    """The ``body_encoding`` :func:`from_amqp` gives a body that has no header saying it."""
    if content_encoding == "binary" or "compression" in headers:
        return "base64"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64"
    return "utf-8"


# -- fetch ----------------------------------------------------------------------------------

def from_amqp(body: bytes, headers: Mapping[str, Any], properties: Mapping[str, Any], *,
              exchange: str, routing_key: str) -> bytes:
    """The stored-message bytes of a delivery: its envelope, or the raw body sent as such.

    ``properties`` are the AMQP properties without ``application_headers`` (as
    :class:`~celeriac.brokers.amqp.params.Incoming` holds them); ``exchange`` and
    ``routing_key`` become the envelope's ``delivery_info``.
    """
    try:
        if headers.get(RAW_HEADER):
            return bytes(body)
        return _dumps(_envelope(bytes(body), headers, properties, exchange, routing_key))
    except Exception as exc:  # never lose a message over a conversion: dead-letter it instead
        log.warning("an AMQP message from %r (routing key %r) cannot be read as a task message: "
                    "%s: %s", exchange, routing_key, type(exc).__name__, exc)
        return _unreadable(body, headers, f"{type(exc).__name__}: {exc}")


def _envelope(body: bytes, headers: Mapping[str, Any], properties: Mapping[str, Any],
              exchange: str, routing_key: str) -> dict[str, Any]:
    task_headers: dict[str, Any] = {}
    for key, value in headers.items():
        name = key if type(key) is str else _json_value(key)
        if name.startswith("x-") and stripped(name):
            continue
        task_headers[name] = value if type(value) in _PLAIN else _json_value(value)
    envelope_properties: dict[str, Any] = {}
    envelope: dict[str, Any] = {"body": "", "headers": task_headers, "properties": envelope_properties}
    for key, value in properties.items():
        if key == "content_type":
            envelope["content-type"] = _json_value(value)
        elif key == "content_encoding":
            envelope["content-encoding"] = _json_value(value)
        elif key != "application_headers":
            envelope_properties[key] = value if type(value) in _PLAIN else _json_value(value)
    envelope["body"], encoding = _body(body, headers.get(BODY_ENCODING_HEADER, _ABSENT),
                                       properties.get("content_encoding"), task_headers)
    if encoding is not None:  # None: the envelope had no body_encoding
        envelope_properties["body_encoding"] = encoding
    envelope_properties["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    return envelope


def _body(body: bytes, encoding: Any, content_encoding: Any,
          headers: Mapping[str, Any]) -> tuple[str, str | None]:
    """The envelope's body and ``body_encoding``: the header's, else :func:`_guess_encoding`'s."""
    if encoding is _ABSENT and (content_encoding == "binary" or "compression" in headers):
        encoding = "base64"
    if encoding != "base64":
        try:
            return body.decode("utf-8"), "utf-8" if encoding is _ABSENT else encoding
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), "base64"


def _json_value(value: Any) -> Any:
    """``value`` as read from an AMQP table, in JSON's types."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {key if type(key) is str else str(_json_value(key)): _json_value(item)
                for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_json_value(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        try:  # py-amqp reads a string with a lone surrogate as bytes: the string again
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # a byte array from another client: readable, for logs
            return data.decode("utf-8", "backslashreplace")
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    for base in (bool, int, float, str):  # subclasses (an IntEnum, say)
        if isinstance(value, base):
            return base(value)
    return str(value)


def _dumps(envelope: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; a lone surrogate (which orjson refuses) escaped by ``json``."""
    try:
        return orjson.dumps(envelope)
    except TypeError:
        return json.dumps(envelope, separators=(",", ":")).encode("ascii")


def _unreadable(body: Any, headers: Mapping[str, Any], reason: str) -> bytes:
    """An envelope the worker refuses, with ``reason``, keeping the body (base64)."""
    try:
        data = bytes(body)
    except Exception:
        data = repr(body).encode()
    task_headers = {}
    for key in ("task", "id"):
        value = headers.get(key) if isinstance(headers, Mapping) else None
        if type(value) is str:
            task_headers[key] = value
    return json.dumps({"body": base64.b64encode(data).decode("ascii"),
                       "content-type": f"{UNREADABLE}; reason={reason[:500]}",
                       "headers": task_headers, "properties": {"body_encoding": "base64"}},
                      separators=(",", ":")).encode("ascii")
