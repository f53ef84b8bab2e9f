"""Message compression with kombu's names, content types and wire form.

Celery compresses a task message when ``compression=`` (per task or per call) or
``task_compression`` names a method. kombu then compresses the *serialized body*
(the bytes of the JSON text, or msgpack's bytes), carries the result as base64 in
the envelope (``properties.body_encoding: "base64"``) and names the method in the
``compression`` header by its content type. celeriac writes and reads the same, so a
compressed message crosses between Celery and celeriac either way::

    gzip, zlib      -> application/x-gzip   (zlib's format, as kombu: not a .gz file)
    bzip2, bzip     -> application/x-bz2
    lzma, xz        -> application/x-lzma

A name may also be the content type itself, as in kombu. kombu's ``brotli`` and
``zstd`` need libraries celeriac does not use; asking for them is an error that says
so. Only the message body is compressed: headers stay readable by every tool.

**Decompressing untrusted input.** A worker decompresses what anyone who can write to
the broker sent. A few kilobytes of zlib can expand to gigabytes, so a body is
decompressed with a bound (:data:`MAX_DECOMPRESSED`): past it, or truncated, it is
refused with the reason (the worker dead-letters the message) instead of taking the
worker's memory.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from celeriac.exceptions import ConfigurationError

#: Largest body a compressed message may expand to (bytes). Task arguments this large
#: belong in storage the task reads, not in a message; a body past it is refused.
MAX_DECOMPRESSED = 256 * 1024 * 1024


class _Decompressor(Protocol):
    """What ``zlib.decompressobj()``, ``bz2.BZ2Decompressor()`` and
    ``lzma.LZMADecompressor()`` share: bounded decompression and an end-of-stream flag."""

    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class Method:
    """One compression method: kombu's content type and names, and the codec."""

    content_type: str
    names: tuple[str, ...]
    compress: Callable[[bytes], bytes]
    decompressor: Callable[[], _Decompressor]


_METHODS = (
    Method("application/x-gzip", ("gzip", "zlib"), zlib.compress, zlib.decompressobj),
    Method("application/x-bz2", ("bzip2", "bzip"), bz2.compress, bz2.BZ2Decompressor),
    Method("application/x-lzma", ("lzma", "xz"), lzma.compress, lzma.LZMADecompressor),
)
#: Every name and content type a method answers to, as kombu resolves them.
_BY_NAME: dict[str, Method] = {
    key: method for method in _METHODS for key in (method.content_type, *method.names)}
#: kombu's methods that need a library celeriac does not depend on.
_ELSEWHERE = {"brotli": "application/x-brotli", "zstd": "application/zstd",
              "zstandard": "application/zstd"}


def names() -> list[str]:
    """The method names (``compression=``), in kombu's order."""
    return [name for method in _METHODS for name in method.names]


def get(name: str) -> Method:
    """The method called ``name`` (or whose content type it is); ConfigurationError if none."""
    method = _BY_NAME.get(name) if isinstance(name, str) else None
    if method is not None:
        return method
    if name in _ELSEWHERE or name in _ELSEWHERE.values():
        raise ConfigurationError(f"compression {name!r} is one of kombu's that needs a library "
                                 f"celeriac does not use; choose one of {', '.join(names())}")
    raise ConfigurationError(f"unknown compression {name!r}: choose one of {', '.join(names())} "
                             "(kombu's names), or None for none")


def checked(name: object) -> str | None:
    """``name`` if it names a method, None for None; the validator of ``task_compression``
    and of the ``compression`` task option (``ValueError`` otherwise, as validators raise)."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise ValueError(f"must be a compression name ({', '.join(names())}) or None")
    try:
        get(name)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None
    return name


def compress(data: bytes, name: str) -> tuple[bytes, str]:
    """``data`` compressed with ``name``, and the content type for the header."""
    method = get(name)
    return method.compress(data), method.content_type


def decompress(data: bytes, header: str, limit: int = MAX_DECOMPRESSED) -> bytes:
    """The body of a message whose ``compression`` header is ``header``.

    ``ValueError`` with the reason for an unknown method, a damaged or truncated
    stream, or one that expands past ``limit`` bytes (decompression stops there).
    """
    method = _BY_NAME.get(header)
    if method is None:
        raise ValueError(f"unknown compression {header!r} (this worker reads "
                         f"{', '.join(m.content_type for m in _METHODS)})")
    decompressor = method.decompressor()
    try:
        out = decompressor.decompress(data, limit + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
        raise ValueError(f"damaged {method.content_type} body: {exc}") from None
    if len(out) > limit:
        raise ValueError(f"{method.content_type} body expands past {limit} bytes")
    if not decompressor.eof:
        raise ValueError(f"truncated {method.content_type} body")
    return out
