"""Typed lines: the one encoding both worker pipes use.

The status pipe (process -> supervisor, :mod:`celeriac.worker.status`) and the
command pipe (supervisor -> process, :mod:`celeriac.worker.commands`) each carry
frozen dataclasses, one JSON array per line: ``[kind, value, value, ...]``, the
values in the dataclass's field order. A :class:`LineCodec` holds the table of
one pipe's types and is the only code that writes or reads those lines, at both
ends, so both ends always agree on the fields (the supervisor and its processes
run the same code): a renamed field is caught by mypy where it is used, a field
added or dropped makes every line of that type the wrong length, which a
round-trip test catches. Arrays rather than objects: a task start crosses the
status pipe for every task, and an array of values is half the bytes and half
the time to encode and to parse of an object naming each field (and orjson, through
:mod:`celeriac.fastjson`, takes a fraction of the standard library's time for either).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from celeriac.fastjson import dumps, loads


class Tagged(Protocol):
    """A line type: a frozen dataclass with a ``kind`` naming it on the wire."""

    kind: ClassVar[str]


T = TypeVar("T", bound=Tagged)


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The values of ``names`` as a tuple (``attrgetter`` of one name returns a bare value)."""
    if len(names) == 1:
        single = operator.attrgetter(names[0])
        return lambda value: (single(value),)
    getter: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
    return getter


class LineCodec(Generic[T]):
    """Encodes and decodes the lines of one pipe."""

    def __init__(self, what: str, types: Sequence[type[T]]) -> None:
        #: What a line is called in errors ("status event", "command").
        self.what = what
        #: kind -> class: the one table both ends use.
        self.types: dict[str, type[T]] = {cls.kind: cls for cls in types}
        names = {cls: tuple(f.name for f in fields(cls)) for cls in types}  # type: ignore[arg-type]
        #: Per class, a C-level getter of every field's value, in field order (a start is
        #: encoded for every task: this is on the hot path).
        self._values = {cls: _getter(found) for cls, found in names.items()}
        self._arity = {cls: len(found) for cls, found in names.items()}
        #: Positions of fields declared as tuples: JSON gives lists back.
        self._tuples = {cls: tuple(i for i, f in enumerate(fields(cls))  # type: ignore[arg-type]
                                   if str(f.type).startswith("tuple")) for cls in types}

    def encode(self, value: T) -> bytes:
        return self.encode_values(type(value), self._values[type(value)](value))

    def encode_values(self, cls: type[T], values: tuple[Any, ...]) -> bytes:
        """The line of a ``cls`` with these field values, in field order, without building
        the dataclass (for the one line every task writes)."""
        return dumps([cls.kind, *values]) + b"\n"

    def decode(self, line: bytes) -> T:
        """Parse one line; ValueError for anything that is not a known, complete line."""
        try:
            data = loads(line)
        except ValueError:
            raise ValueError(f"not a {self.what}: {line[:200]!r}") from None
        kind = data[0] if isinstance(data, list) and data else None
        cls = self.types.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"not a {self.what}: {line[:200]!r}")
        values = data[1:]
        if len(values) != self._arity[cls]:
            raise ValueError(f"malformed {cls.kind} {self.what}: {len(values)} values for "
                             f"{self._arity[cls]} fields")
        for index in self._tuples[cls]:
            if isinstance(values[index], list):
                values[index] = tuple(values[index])
        return cls(*values)
