"""Result backends, chosen by the scheme of the ``result_backend`` URL.

Callers should only need :func:`backend_from_url` and the names re-exported
from :mod:`celeriac.backends.base`; the concrete classes are registered in
:data:`BACKENDS` so that adding a transport is one line here.
"""

from __future__ import annotations

from urllib.parse import urlparse

from celeriac.backends.base import (
    ALL_STATES,
    FAILURE,
    PENDING,
    READY_STATES,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    ResultBackend,
    ResultRecord,
)
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.errors import ConfigurationError

__all__ = [
    "ALL_STATES",
    "BACKENDS",
    "FAILURE",
    "PENDING",
    "READY_STATES",
    "RETRY",
    "REVOKED",
    "STARTED",
    "SUCCESS",
    "MemoryBackend",
    "ResultBackend",
    "ResultRecord",
    "SQLiteBackend",
    "backend_from_url",
]

#: URL scheme -> backend class.
BACKENDS: dict[str, type[ResultBackend]] = {
    scheme: cls for cls in (MemoryBackend, SQLiteBackend) for scheme in cls.schemes
}


def backend_from_url(url: str, *, expires: float = 86400.0) -> ResultBackend:
    """Build the backend for ``url``; ``expires`` is how long records are kept, in seconds."""
    scheme = urlparse(url).scheme
    cls = BACKENDS.get(scheme)
    if cls is None:
        known = ", ".join(f"{name}://" for name in sorted(BACKENDS))
        raise ConfigurationError(
            f"unknown result backend {url!r} (scheme {scheme!r}); known schemes: {known}")
    return cls(url, expires=expires)
