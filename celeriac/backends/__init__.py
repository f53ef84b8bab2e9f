"""Result backends, chosen by the scheme of the ``result_backend`` URL.

Callers should only need :func:`backend_from_url` and the names re-exported
from :mod:`celeriac.backends.base` (the states live in :mod:`celeriac.states`).
Backends that need nothing beyond the standard library are registered in
:data:`BACKENDS` directly; backends that need a client library (redis) go in
:data:`LAZY_BACKENDS` as a ``"module:Class"`` path, so ``import celeriac`` never
imports -- or requires -- a client the user does not use. The first use of such
a scheme imports the class and moves it into :data:`BACKENDS` (the same
:class:`celeriac.extras.SchemeRegistry` as :mod:`celeriac.brokers` uses for brokers).
"""

from __future__ import annotations

from celeriac.backends.base import ResultBackend, ResultRecord
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.extras import SchemeRegistry

__all__ = [
    "BACKENDS",
    "LAZY_BACKENDS",
    "MemoryBackend",
    "ResultBackend",
    "ResultRecord",
    "SQLiteBackend",
    "backend_class",
    "backend_from_url",
    "known_schemes",
]

#: URL scheme -> backend class, for backends that are already imported.
BACKENDS: dict[str, type[ResultBackend]] = {
    scheme: cls for cls in (MemoryBackend, SQLiteBackend) for scheme in cls.schemes
}

#: URL scheme -> ``"module:Class"`` of a backend imported on first use.
LAZY_BACKENDS: dict[str, str] = {
    scheme: "celeriac.backends.redis:RedisBackend" for scheme in ("redis", "rediss", "unix")
}


_REGISTRY = SchemeRegistry("result backend", BACKENDS, LAZY_BACKENDS)


def known_schemes() -> list[str]:
    """Every scheme :func:`backend_from_url` accepts, sorted."""
    return _REGISTRY.known_schemes()


def backend_class(scheme: str) -> type[ResultBackend]:
    """The backend class serving ``scheme``, importing it if it is a lazy one."""
    return _REGISTRY.cls(scheme)


def backend_from_url(url: str, *, expires: float = 86400.0, index: bool = True) -> ResultBackend:
    """Build the backend for ``url``; ``expires`` is how long records are kept, in seconds,
    ``index`` whether stores keep the task index that search reads (``result_index``)."""
    return _REGISTRY.for_url(url)(url, expires=expires, index=index)
