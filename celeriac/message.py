"""Task messages: Celery's task message protocol v2, encoded as JSON.

A message is an *envelope* (what the broker stores, as UTF-8 JSON)::

    {"headers": {...}, "properties": {...}, "content-type": "application/json",
     "content-encoding": "utf-8", "body": "[args, kwargs, embed]"}

``body`` is the serialized ``[args, kwargs, {"callbacks", "errbacks", "chain",
"chord"}]`` as a string: JSON text (with kombu's type markers, see
:mod:`celeriac.serialization`), base64 of a pickle or of msgpack's bytes, or what a
registered serializer writes; compressed (:mod:`celeriac.compression`), base64 of the
compressed bytes with a ``compression`` header, as kombu. ``docs/protocol.md``
documents every field. :class:`TaskMessage` is the
decoded, frozen value the worker works with; nothing in it is trusted: every
field is checked on decode and a bad message raises :class:`MessageDecodeError`,
which the worker turns into a dead letter.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from celeriac import compression as compressing
from celeriac import fastjson, serialization
from celeriac.exceptions import MessageDecodeError, SerializationError
from celeriac.serialization import JSON as JSON  # re-exported: the content types live there
from celeriac.serialization import PICKLE as PICKLE

#: Serializer name -> content type, for every registered serializer (a live view).
CONTENT_TYPES = serialization.ContentTypes()

#: The origin header of messages sent from this process.
ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"

#: Longest argsrepr/kwargsrepr kept in headers (for logs and monitoring only).
REPR_LIMIT = 1024


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def parse_iso(value: Any, header: str) -> float | None:
    """An ISO 8601 header (naive means UTC) as a Unix timestamp."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageDecodeError(
            f"header {header!r} must be an ISO 8601 string, got {_short_repr(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MessageDecodeError(f"header {header!r} is not ISO 8601: {_short_repr(value)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


@dataclass(slots=True)
class TaskMessage:
    """A decoded task message (not frozen: one is built for every task a worker runs,
    and a frozen dataclass costs three times as much to build; nothing changes it)."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)
    embed: dict[str, Any] = field(default_factory=dict)
    #: The envelope's properties (``correlation_id``, ``reply_to``, ``delivery_info``...).
    properties: dict[str, Any] = field(default_factory=dict)
    #: Unix time after which the task must not run, or None.
    expires: float | None = None
    #: Unix time before which the task should not run, or None.
    eta: float | None = None
    retries: int = 0
    #: (hard, soft) time limits in seconds from the sender, either may be None.
    timelimit: tuple[float | None, float | None] = (None, None)
    priority: int = 0
    content_type: str = JSON

    @property
    def root_id(self) -> str:
        return str(self.headers.get("root_id") or self.id)

    @property
    def parent_id(self) -> str | None:
        parent = self.headers.get("parent_id")
        return str(parent) if parent else None

    @property
    def group(self) -> str | None:
        group = self.headers.get("group")
        return str(group) if group else None

    @property
    def ignore_result(self) -> bool:
        return bool(self.headers.get("ignore_result", False))


def _refused(chosen: serialization.Serializer, task: str, exc: Exception) -> SerializationError:
    if chosen.name == "json":
        return SerializationError(
            f"arguments of task {task!r} cannot be encoded as JSON: {exc}. Pass JSON types "
            "(str, int, float, bool, None, list, dict), datetime, date, time, Decimal, UUID "
            "or bytes, or opt in to pickle (task_serializer='pickle' and 'pickle' in "
            "accept_content)")
    return SerializationError(f"arguments of task {task!r} cannot be encoded with {chosen.name}: "
                              f"{exc}")


def _serialize(payload: list[Any], serializer: str, task: str,
               compression: str | None = None) -> tuple[str, str, str, str, str | None]:
    """Return (body, content_type, content_encoding, body_encoding, compression header).

    A binary serializer's bytes travel as base64 (``body_encoding: base64``), as
    kombu's Redis transport sends them; text is the body itself. Compressed, the
    serialized bytes (text in the serializer's encoding) are compressed, then base64,
    and the ``compression`` header names the method by content type, as kombu does.
    """
    chosen = serialization.get(serializer)  # ConfigurationError when unknown
    try:
        data = chosen.encoder(payload)
    except Exception as exc:
        raise _refused(chosen, task, exc) from None
    if compression is None and type(data) is str and chosen.content_encoding != "binary":
        return data, chosen.content_type, "utf-8", "utf-8", None  # JSON: the common case
    return _binary(chosen, data, compression)


def _binary(chosen: serialization.Serializer, data: Any,
            compression: str | None) -> tuple[str, str, str, str, str | None]:
    """:func:`_serialize` for bytes, text in another type, or compression."""
    if chosen.binary:
        if not isinstance(data, bytes | bytearray):
            raise SerializationError(f"serializer {chosen.name!r} is binary but returned "
                                     f"{type(data).__name__}, not bytes")
        raw = bytes(data)
    else:
        if isinstance(data, bytes | bytearray):
            try:
                data = bytes(data).decode(chosen.content_encoding)
            except UnicodeDecodeError as exc:
                raise SerializationError(f"serializer {chosen.name!r} returned bytes that are "
                                         f"not {chosen.content_encoding}: {exc}") from None
        if not isinstance(data, str):
            raise SerializationError(f"serializer {chosen.name!r} returned "
                                     f"{type(data).__name__}, not text")
        if compression is None:
            return data, chosen.content_type, "utf-8", "utf-8", None
        raw = data.encode(chosen.content_encoding)
    encoding = "binary" if chosen.binary else "utf-8"
    header = None
    if compression is not None:
        raw, header = compressing.compress(raw, compression)  # ConfigurationError when unknown
    return base64.b64encode(raw).decode("ascii"), chosen.content_type, encoding, "base64", header


@dataclass
class Envelope:
    """A task message about to be published: built, arguments already serialized, and
    still open to change -- ``before_publish`` hooks (the ``before_task_publish``
    signal) may add headers, e.g. a trace context -- until :meth:`dumps`."""

    #: The protocol v2 envelope: headers, properties, content type, body (serialized text).
    wire: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    #: The queue it is routed to.
    queue: str

    @property
    def headers(self) -> dict[str, Any]:
        headers: dict[str, Any] = self.wire["headers"]
        return headers

    @property
    def properties(self) -> dict[str, Any]:
        properties: dict[str, Any] = self.wire["properties"]
        return properties

    def dumps(self) -> bytes:
        """The bytes the broker stores, written by orjson (a tenth of ``json.dumps``'s time:
        the envelope is the largest object a send encodes). Headers and properties are
        celeriac's own values plus what ``before_task_publish`` hooks add, which
        :func:`celeriac.fastjson.dumps` writes as ``json.dumps`` does except a float NaN
        or infinity, written as ``null`` (a time limit then means none, as it would)."""
        return fastjson.dumps(self.wire)


#: The header of a chord body's message (``[group id, token]``): the consumer claims the
#: body's run with it, so a body sent twice runs once (``docs/canvas-chords.md``).
CHORD_CLAIM_HEADER = "celeriac_chord_claim"


class MessageTemplate:
    """What every message of one send shares: built once from the send's options, then
    :meth:`stamp`-ed with each message's id and arguments.

    ``apply_many`` of 10,000 tasks with equal options stamps one template 10,000
    times: the options are passed, checked and laid out once, not once per message
    (their keyword arguments alone took a tenth of a bulk send's time, py-spy,
    2026-12-05). :func:`build` is a template stamped once.
    """

    __slots__ = (
        "compression",
        "embed",
        "extra_headers",
        "headers",
        "properties",
        "queue",
        "root_id",
        "serializer",
        "task",
    )

    def __init__(
        self,
        task: str,
        *,
        queue: str,
        serializer: str = "json",
        eta: float | None = None,
        expires: float | None = None,
        retries: int = 0,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group: str | None = None,
        priority: int = 0,
        ignore_result: bool = False,
        embed: dict[str, Any] | None = None,
        compression: str | None = None,
        group_index: int | None = None,
        extra_headers: dict[str, Any] | None = None,
    ) -> None:
        self.task, self.queue, self.serializer, self.compression = task, queue, serializer, compression
        self.embed = embed or {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
        self.root_id = root_id
        self.extra_headers = extra_headers
        #: The headers in their order on the wire; ``None`` where each message has its own.
        self.headers: dict[str, Any] = {
            "lang": "py", "task": task, "id": None, "shadow": None,
            "eta": _iso(eta), "expires": _iso(expires), "group": group, "group_index": group_index,
            "retries": retries, "timelimit": [time_limit, soft_time_limit],
            "root_id": None, "parent_id": parent_id, "argsrepr": None, "kwargsrepr": None,
            "origin": ORIGIN, "ignore_result": ignore_result,
        }
        self.properties: dict[str, Any] = {
            "correlation_id": None, "reply_to": "", "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority, "body_encoding": None, "delivery_tag": None,
        }

    def stamp(self, task_id: str, args: Sequence[Any], kwargs: dict[str, Any], *,
              last: bool = False) -> Envelope:
        """One message; raises SerializationError for arguments the serializer refuses,
        ConfigurationError for an unknown serializer or compression. Each message has
        its own headers, properties and embed; ``last``: the template is not stamped
        again, so the message takes the template's own (a single send copies nothing)."""
        args = list(args)
        if last:
            embed, headers, properties = self.embed, self.headers, self.properties
        else:
            embed, headers, properties = self.embed.copy(), self.headers.copy(), self.properties.copy()
            headers["timelimit"] = list(headers["timelimit"])
            properties["delivery_info"] = dict(properties["delivery_info"])
        body, content_type, content_encoding, body_encoding, compressed = _serialize(
            [args, kwargs, embed], self.serializer, self.task, self.compression)
        headers["id"] = task_id
        headers["root_id"] = self.root_id or task_id
        headers["argsrepr"] = _short_repr(args)
        headers["kwargsrepr"] = _short_repr(kwargs)
        properties["correlation_id"] = properties["delivery_tag"] = task_id
        properties["body_encoding"] = body_encoding
        if compressed is not None:
            headers["compression"] = compressed
        if self.extra_headers:
            headers.update(self.extra_headers)
        wire: dict[str, Any] = {"body": body, "content-encoding": content_encoding,
                                "content-type": content_type, "headers": headers,
                                "properties": properties}
        return Envelope(wire, args, kwargs, embed, self.queue)


def build(task: str, task_id: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any],
          *, queue: str, **options: Any) -> Envelope:
    """Build a task message (a :class:`MessageTemplate` of ``options``, stamped once);
    raises SerializationError for arguments the serializer refuses, ConfigurationError
    for an unknown serializer or compression."""
    return MessageTemplate(task, queue=queue, **options).stamp(task_id, args, kwargs, last=True)


def encode(task: str, task_id: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any],
           *, queue: str, **options: Any) -> bytes:
    """The wire form of a task message (:func:`build` then :meth:`Envelope.dumps`)."""
    return build(task, task_id, args, kwargs, queue=queue, **options).dumps()


#: ``content-encoding`` values Celery and celeriac write (case-insensitive, as charset
#: names are); the body is text inside the UTF-8 envelope whatever the value says.
_CONTENT_ENCODINGS = frozenset({"utf-8", "utf8", "binary"})
#: ``body_encoding`` values: the body is the serialized text itself, or base64 of it.
#: Any other value names an encoding the worker cannot undo: the message is refused
#: rather than its body read as if it were plain.
_BODY_ENCODINGS = (None, "utf-8", "base64")


def _deserialize(body: Any, content_type: Any, body_encoding: Any, accept: set[str],
                 compression: Any = None) -> Any:
    if not isinstance(content_type, str) or content_type not in accept:
        raise MessageDecodeError(f"content type {_short_repr(content_type)} is not accepted "
                                 f"(accept_content: {sorted(accept)})")
    chosen = serialization.by_content_type(content_type)
    if chosen is None:
        raise MessageDecodeError(serialization.missing(content_type) or
                                 f"content type {_short_repr(content_type)} has no registered "
                                 "serializer in this process")
    if not isinstance(body, str):
        raise MessageDecodeError("body must be a string")
    if compression is not None and not isinstance(compression, str):
        raise MessageDecodeError(f"header 'compression' must be a string or null, "
                                 f"got {_short_repr(compression)}")
    try:
        # validate=True: base64 with other characters in it is damaged, not to be read
        # by skipping them (which can turn garbage into a valid body). A binary or
        # compressed body is base64 whatever body_encoding says: a JSON string cannot
        # carry bytes otherwise.
        data: str | bytes = body
        if chosen.binary or body_encoding == "base64" or compression is not None:
            data = base64.b64decode(body, validate=True)
            if compression is not None:
                data = compressing.decompress(data, compression)
            if not chosen.binary:
                data = data.decode(chosen.content_encoding)
        return chosen.decoder(data)
    except Exception as exc:  # a malformed marker (MarkerError) too
        raise MessageDecodeError(f"undecodable {content_type} body: {exc}") from None


def _number(value: Any, header: str) -> float | None:
    """A time limit in seconds, or None for none.

    A negative number is refused. NaN (which ``json.loads`` reads), infinity and an
    integer beyond a float's range mean no limit, as null does: the pools hand limits
    to timers, which raise on them (``float()`` of such an integer raises too).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise MessageDecodeError(
            f"header {header!r} must be a number of seconds >= 0, got {_short_repr(value)}")
    return float(value) if value <= sys.float_info.max else None  # False for NaN


#: The type of each protocol header not checked on its own in :func:`decode` (each may
#: be null; ``docs/protocol.md``). The worker's logs, status lines, events and results
#: then meet a string where they expect one, never a list nested a thousand deep.
_HEADER_TYPES: tuple[tuple[str, type], ...] = (
    ("lang", str), ("shadow", str), ("group", str), ("group_index", int), ("root_id", str),
    ("parent_id", str), ("argsrepr", str), ("kwargsrepr", str), ("origin", str),
    ("ignore_result", bool),
)
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean"}

#: The headers :func:`build` writes: those checked on their own in :func:`decode`, and
#: the rest of the table above. Their values are strings, None, small integers and the
#: time limits: in an envelope with no other header, orjson reads every value as
#: ``json.loads`` would (see :func:`_parse_envelope`).
_OWN_HEADERS = frozenset({"task", "id", "eta", "expires", "retries", "timelimit", "compression",
                          *(name for name, _ in _HEADER_TYPES)})


def _parse_envelope(text: str) -> Any:
    """The envelope parsed as ``json.loads`` would, in a fraction of its time for the
    messages celeriac and Celery send (a worker parses one per task).

    orjson reads an integer beyond 64 bits as a float, where ``json.loads`` keeps it:
    an envelope with headers of its own (a custom header, Celery's stamps), or an
    integer header that came back a float, is parsed again by ``json.loads``. The body
    (the task's arguments) is a string inside the envelope, parsed by ``json.loads``.
    """
    envelope = fastjson.loads(text)
    if isinstance(envelope, dict):
        headers, properties = envelope.get("headers"), envelope.get("properties")
        if isinstance(headers, dict) and (
                not _OWN_HEADERS.issuperset(headers)
                or type(headers.get("retries")) is float
                or type(headers.get("group_index")) is float
                or (isinstance(properties, dict) and type(properties.get("priority")) is float)):
            return json.loads(text)
    return envelope


def decode(data: bytes, accept: set[str] | None = None) -> TaskMessage:
    """Parse and check a message from the broker. ``accept`` holds content types.

    Whatever the bytes, the only exception is :class:`MessageDecodeError`. That
    includes a message nested deeper than the recursion limit: the JSON parsers (and
    ``repr`` of a value for the reason) raise ``RecursionError`` on it, which the worker
    would take for an internal error of its own and deliver the message again.
    """
    try:
        return _decode(data, accept or {JSON})
    except RecursionError:
        raise MessageDecodeError("message is nested too deeply") from None


def _envelope(data: bytes) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The envelope, its headers and its properties, each checked to be an object."""
    try:
        # Strict UTF-8 first: given bytes, json.loads (orjson's fallback) would also read
        # UTF-16 and UTF-32, skip a BOM and let encoded surrogates through.
        envelope = _parse_envelope(data.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is one
        raise MessageDecodeError(f"message is not JSON: {exc}") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("headers"), dict):
        raise MessageDecodeError("message is not a protocol v2 envelope (no headers object)")
    properties = envelope.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise MessageDecodeError("properties must be an object")
    return envelope, envelope["headers"], properties


def _storable(task_id: Any) -> bool:
    """A task id results can be stored under: a non-empty string that UTF-8 can encode.
    JSON can escape a lone surrogate (``"\\ud800"``), which SQLite and Redis refuse in a
    key: storing a batch of results with it would fail for every task in the batch."""
    if not isinstance(task_id, str) or not task_id:
        return False
    if task_id.isascii():
        return True
    try:
        task_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_headers(headers: dict[str, Any]) -> None:
    get = headers.get
    task, task_id = get("task"), get("id")
    if not isinstance(task, str) or not task:
        raise MessageDecodeError("header 'task' is missing")
    if not _storable(task_id):
        raise MessageDecodeError("header 'id' is missing" if not task_id else
                                 f"header 'id' is not a valid task id: {_short_repr(task_id)}")
    for name, kind in _HEADER_TYPES:
        value = get(name)
        if value is not None and type(value) is not kind:
            raise MessageDecodeError(f"header {name!r} must be {_TYPE_NAMES[kind]} or null, "
                                     f"got {_short_repr(value)}")


def _decode(data: bytes, accept: set[str]) -> TaskMessage:
    envelope, headers, properties = _envelope(data)
    _check_headers(headers)
    encoding = envelope.get("content-encoding")
    if encoding is not None and (not isinstance(encoding, str)
                                 or encoding.lower() not in _CONTENT_ENCODINGS):
        raise MessageDecodeError(f"unknown content-encoding {_short_repr(encoding)}")
    body_encoding = properties.get("body_encoding")
    if body_encoding not in _BODY_ENCODINGS:
        raise MessageDecodeError(f"unknown body_encoding {_short_repr(body_encoding)}")
    content_type = envelope.get("content-type", JSON)
    payload = _deserialize(envelope.get("body"), content_type, body_encoding, accept,
                           headers.get("compression"))
    if not (isinstance(payload, list) and len(payload) == 3 and isinstance(payload[0], list)
            and isinstance(payload[1], dict) and isinstance(payload[2], dict | None)):
        raise MessageDecodeError("body must be [args (list), kwargs (object), embed (object)]")
    timelimit = headers.get("timelimit")
    if timelimit is None:
        timelimit = (None, None)
    elif not isinstance(timelimit, list) or len(timelimit) != 2:
        raise MessageDecodeError(f"header 'timelimit' must be [hard, soft], got {_short_repr(timelimit)}")
    retries = headers.get("retries")
    if retries is None:
        retries = 0
    elif type(retries) is not int or retries < 0:
        raise MessageDecodeError(
            f"header 'retries' must be a non-negative integer, got {_short_repr(retries)}")
    priority = properties.get("priority")
    if priority is not None and type(priority) is not int:
        raise MessageDecodeError(f"property 'priority' must be an integer, got {_short_repr(priority)}")
    return TaskMessage(
        id=headers["id"], task=headers["task"], args=payload[0], kwargs=payload[1],
        headers=headers, embed=payload[2] or {}, properties=properties,
        expires=parse_iso(headers.get("expires"), "expires"),
        eta=parse_iso(headers.get("eta"), "eta"), retries=retries,
        timelimit=(_number(timelimit[0], "timelimit"), _number(timelimit[1], "timelimit")),
        priority=priority or 0, content_type=content_type,
    )


def peek_task_id(data: bytes) -> tuple[str | None, str | None]:
    """Best-effort (task name, task id) of a possibly malformed message, for logs and the
    FAILURE result of a dead letter: the name only if it is a non-empty string, the id
    only if a result can be stored under it (one stored under the text of a list or a
    number would help nobody, one that cannot be stored would fail its whole batch)."""
    try:
        headers = json.loads(data).get("headers") or {}
        name, task_id = headers.get("task"), headers.get("id")
    except Exception:
        return None, None
    return (name if isinstance(name, str) and name else None,
            task_id if _storable(task_id) else None)
