"""Typed lines: the one encoding both worker pipes use.

The status pipe (process -> supervisor, :mod:`celeriac.worker.status`) and the
command pipe (supervisor -> process, :mod:`celeriac.worker.commands`) each carry
frozen dataclasses, one JSON object per line: ``{TAG: kind, field: value, ...}``
with the dataclass's own field names. A :class:`LineCodec` holds the table of
one pipe's types and is the only code that writes or reads those lines, at both
ends, so a renamed or added field fails a round-trip test rather than silently.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, ClassVar, Generic, Protocol, TypeVar


class Tagged(Protocol):
    """A line type: a frozen dataclass with a ``kind`` naming it on the wire."""

    kind: ClassVar[str]


T = TypeVar("T", bound=Tagged)

#: One encoder for every line (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The values of ``names`` as a tuple (``attrgetter`` of one name returns a bare value)."""
    if len(names) == 1:
        single = operator.attrgetter(names[0])
        return lambda value: (single(value),)
    getter: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
    return getter


class LineCodec(Generic[T]):
    """Encodes and decodes the lines of one pipe (``tag`` is the key holding the kind)."""

    def __init__(self, tag: str, what: str, types: Sequence[type[T]]) -> None:
        self.tag = tag
        #: What a line is called in errors ("status event", "command").
        self.what = what
        #: kind -> class: the one table both ends use.
        self.types: dict[str, type[T]] = {cls.kind: cls for cls in types}
        self._fields = {cls: tuple(f.name for f in fields(cls)) for cls in types}  # type: ignore[arg-type]
        #: Per class, a C-level getter of every field's value, in field order (a start is
        #: encoded for every task: this is on the hot path).
        self._values = {cls: _getter(names) for cls, names in self._fields.items()}
        #: Fields declared as tuples: JSON gives lists back, the dataclass wants tuples.
        self._tuples = {cls: tuple(f.name for f in fields(cls)  # type: ignore[arg-type]
                                   if str(f.type).startswith("tuple")) for cls in types}

    def encode(self, value: T) -> bytes:
        cls = type(value)
        data: dict[str, Any] = {self.tag: value.kind}
        data.update(zip(self._fields[cls], self._values[cls](value), strict=True))
        return (_ENCODER.encode(data) + "\n").encode()

    def decode(self, line: bytes) -> T:
        """Parse one line; ValueError for anything that is not a known, complete line."""
        try:
            data = json.loads(line)
        except ValueError:
            raise ValueError(f"not a {self.what}: {line[:200]!r}") from None
        kind = data.pop(self.tag, None) if isinstance(data, dict) else None
        cls = self.types.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"not a {self.what}: {line[:200]!r}")
        for name in self._tuples[cls]:
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"malformed {cls.kind} {self.what}: {exc}") from None
