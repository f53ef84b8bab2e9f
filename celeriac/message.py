"""Task messages: Celery's task message protocol v2, encoded as JSON.

A message is an *envelope* (what the broker stores, as UTF-8 JSON)::

    {"headers": {...}, "properties": {...}, "content-type": "application/json",
     "content-encoding": "utf-8", "body": "[args, kwargs, embed]"}

``body`` is the serialized ``[args, kwargs, {"callbacks", "errbacks", "chain",
"chord"}]`` as a string: JSON text, or base64 of a pickle when a user opted in to
pickle. ``docs/protocol.md`` documents every field. :class:`TaskMessage` is the
decoded, frozen value the worker works with; nothing in it is trusted: every
field is checked on decode and a bad message raises :class:`MessageDecodeError`,
which the worker turns into a dead letter.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from celeriac import fastjson
from celeriac.errors import ConfigurationError, MessageDecodeError, SerializationError

JSON = "application/json"
PICKLE = "application/x-python-serialize"
CONTENT_TYPES = {"json": JSON, "pickle": PICKLE}

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
        raise MessageDecodeError(f"header {header!r} must be an ISO 8601 string, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MessageDecodeError(f"header {header!r} is not ISO 8601: {value!r}") from None
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


def _serialize(payload: list[Any], serializer: str, task: str) -> tuple[str, str, str]:
    """Return (body, content_type, body_encoding)."""
    if serializer == "json":
        try:
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"arguments of task {task!r} cannot be encoded as JSON: {exc}. Pass JSON types "
                "(str, int, float, bool, None, list, dict) or opt in to pickle "
                "(task_serializer='pickle' and 'pickle' in accept_content)") from None
        return text, JSON, "utf-8"
    if serializer == "pickle":
        try:
            data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(f"arguments of task {task!r} cannot be pickled: {exc}") from None
        return base64.b64encode(data).decode("ascii"), PICKLE, "base64"
    raise ConfigurationError(f"unknown serializer {serializer!r} (known: json, pickle)")


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
        """The bytes the broker stores."""
        return json.dumps(self.wire, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def build(
    task: str,
    task_id: str,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
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
) -> Envelope:
    """Build a task message; raises SerializationError for arguments the serializer refuses."""
    embed = embed or {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    args = list(args)
    body, content_type, body_encoding = _serialize([args, kwargs, embed], serializer, task)
    wire = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {
            "lang": "py", "task": task, "id": task_id, "shadow": None,
            "eta": _iso(eta), "expires": _iso(expires), "group": group, "group_index": None,
            "retries": retries, "timelimit": [time_limit, soft_time_limit],
            "root_id": root_id or task_id, "parent_id": parent_id,
            "argsrepr": _short_repr(args), "kwargsrepr": _short_repr(kwargs),
            "origin": ORIGIN, "ignore_result": ignore_result,
        },
        "properties": {
            "correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority, "body_encoding": body_encoding, "delivery_tag": task_id,
        },
    }
    return Envelope(wire, args, kwargs, embed, queue)


def encode(task: str, task_id: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any],
           *, queue: str, **options: Any) -> bytes:
    """The wire form of a task message (:func:`build` then :meth:`Envelope.dumps`)."""
    return build(task, task_id, args, kwargs, queue=queue, **options).dumps()


def _deserialize(body: Any, content_type: str, body_encoding: str, accept: set[str]) -> Any:
    if content_type not in accept:
        raise MessageDecodeError(
            f"content type {content_type!r} is not accepted (accept_content: {sorted(accept)})")
    if not isinstance(body, str):
        raise MessageDecodeError("body must be a string")
    try:
        if content_type == JSON:
            if body_encoding == "base64":
                body = base64.b64decode(body).decode("utf-8")
            return json.loads(body)
        return pickle.loads(base64.b64decode(body))
    except Exception as exc:
        raise MessageDecodeError(f"undecodable {content_type} body: {exc}") from None


def _number(value: Any, header: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageDecodeError(f"header {header!r} must be a number, got {value!r}")
    return float(value)


#: The headers :func:`build` writes. Their values are strings, None, small integers
#: and the time limits: in an envelope with no other header, orjson reads every value
#: as ``json.loads`` would (see :func:`_parse_envelope`).
_OWN_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
})


def _parse_envelope(data: bytes) -> Any:
    """The envelope parsed as ``json.loads`` would, in a fraction of its time for the
    messages celeriac and Celery send (a worker parses one per task).

    orjson reads an integer beyond 64 bits as a float, where ``json.loads`` keeps it:
    an envelope with headers of its own (a custom header, Celery's stamps), or an
    integer header that came back a float, is parsed again by ``json.loads``. The body
    (the task's arguments) is a string inside the envelope, parsed by ``json.loads``.
    """
    envelope = fastjson.loads(data)
    if isinstance(envelope, dict):
        headers = envelope.get("headers")
        if isinstance(headers, dict) and (
                not _OWN_HEADERS.issuperset(headers)
                or type(headers.get("retries")) is float
                or type(headers.get("group_index")) is float
                or type((envelope.get("properties") or {}).get("priority")) is float):
            return json.loads(data)
    return envelope


def decode(data: bytes, accept: set[str] | None = None) -> TaskMessage:
    """Parse and check a message from the broker. ``accept`` holds content types."""
    accept = accept or {JSON}
    try:
        envelope = _parse_envelope(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageDecodeError(f"message is not JSON: {exc}") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("headers"), dict):
        raise MessageDecodeError("message is not a protocol v2 envelope (no headers object)")
    headers: dict[str, Any] = envelope["headers"]
    properties = envelope.get("properties") or {}
    if not isinstance(properties, dict):
        raise MessageDecodeError("properties must be an object")
    task, task_id = headers.get("task"), headers.get("id")
    if not isinstance(task, str) or not task:
        raise MessageDecodeError("header 'task' is missing")
    if not isinstance(task_id, str) or not task_id:
        raise MessageDecodeError("header 'id' is missing")
    payload = _deserialize(envelope.get("body"), str(envelope.get("content-type", JSON)),
                           str(properties.get("body_encoding", "utf-8")), accept)
    if not (isinstance(payload, list) and len(payload) == 3 and isinstance(payload[0], list)
            and isinstance(payload[1], dict) and isinstance(payload[2], dict | None)):
        raise MessageDecodeError("body must be [args (list), kwargs (object), embed (object)]")
    timelimit = headers.get("timelimit") or [None, None]
    if not isinstance(timelimit, list | tuple) or len(timelimit) != 2:
        raise MessageDecodeError(f"header 'timelimit' must be [hard, soft], got {timelimit!r}")
    retries = headers.get("retries") or 0
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise MessageDecodeError(f"header 'retries' must be a non-negative integer, got {retries!r}")
    priority = properties.get("priority") or 0
    return TaskMessage(
        id=task_id, task=task, args=payload[0], kwargs=payload[1], headers=headers,
        embed=payload[2] or {}, expires=parse_iso(headers.get("expires"), "expires"),
        eta=parse_iso(headers.get("eta"), "eta"), retries=retries,
        timelimit=(_number(timelimit[0], "timelimit"), _number(timelimit[1], "timelimit")),
        priority=int(priority) if isinstance(priority, int) else 0,
        content_type=str(envelope.get("content-type", JSON)),
    )


def peek_task_id(data: bytes) -> tuple[str | None, str | None]:
    """Best-effort (task name, task id) of a possibly malformed message, for logs."""
    try:
        headers = json.loads(data).get("headers") or {}
        return (str(headers.get("task")) if headers.get("task") else None,
                str(headers.get("id")) if headers.get("id") else None)
    except Exception:
        return None, None
