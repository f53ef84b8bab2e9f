"""Result backends, chosen by the scheme of the ``result_backend`` URL.

Callers should only need :func:`backend_from_url` and the names re-exported
from :mod:`celeriac.backends.base` (the states live in :mod:`celeriac.states`).
Backends that need nothing beyond the standard library are registered in
:data:`BACKENDS` directly; backends that need a client library (redis) go in
:data:`LAZY_BACKENDS` as a ``"module:Class"`` path, so ``import celeriac`` never
imports -- or requires -- a client the user does not use. The first use of such
a scheme imports the class and moves it into :data:`BACKENDS` (as
:mod:`celeriac.brokers` does for brokers).
"""

from __future__ import annotations

from urllib.parse import urlparse

from celeriac.backends.base import ResultBackend, ResultRecord
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.exceptions import ConfigurationError
from celeriac.extras import import_class

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


def known_schemes() -> list[str]:
    """Every scheme :func:`backend_from_url` accepts, sorted."""
    return sorted(BACKENDS.keys() | LAZY_BACKENDS.keys())


def _unknown(what: str) -> ConfigurationError:
    known = ", ".join(f"{name}://" for name in known_schemes())
    return ConfigurationError(f"unknown result backend {what}; known schemes: {known}")


def backend_class(scheme: str) -> type[ResultBackend]:
    """The backend class serving ``scheme``, importing it if it is a lazy one."""
    cls = BACKENDS.get(scheme)
    if cls is not None:
        return cls
    target = LAZY_BACKENDS.get(scheme)
    if target is None:
        raise _unknown(f"scheme {scheme!r}")
    loaded: type[ResultBackend] = import_class(target, f"the {scheme}:// result backend")
    BACKENDS[scheme] = loaded
    return loaded


def backend_from_url(url: str, *, expires: float = 86400.0, index: bool = True) -> ResultBackend:
    """Build the backend for ``url``; ``expires`` is how long records are kept, in seconds,
    ``index`` whether stores keep the task index that search reads (``result_index``)."""
    scheme = urlparse(url).scheme
    if scheme not in BACKENDS and scheme not in LAZY_BACKENDS:
        raise _unknown(f"{url!r} (scheme {scheme!r})")
    return backend_class(scheme)(url, expires=expires, index=index)
