"""Redis connections shared by the Redis broker and the Redis result backend.

Two decisions live here so that both users of Redis make them the same way:

* **One bounded, blocking pool per process and URL.** A gevent worker may run a
  thousand greenlets that all publish or read results; they share a pool of
  ``redis_max_connections`` sockets and wait (cooperatively, the pool's queue is
  patched) for a free one instead of opening a thousand connections or failing
  with "too many connections". Threads and prefork children share it the same
  way; a pool created before ``fork()`` is discarded by redis-py in the child.
* **Our own retry, not redis-py's.** redis-py would silently resend a command
  after a dropped connection, which for a non-idempotent script (claiming
  messages) is not ours to decide. :class:`Reconnector` retries only calls the
  caller marks as safe to repeat, backs off exponentially, and logs one line when
  the connection is lost and one when it is back, instead of a traceback per try.

URLs are redis-py's (``redis://[[user]:password@]host:port/db``, ``rediss://``
for TLS, ``unix:///path/to/socket?db=0``) plus one parameter of ours:
``prefix=NAME`` puts every key under ``NAME:`` instead of ``celeriac:``, so two
applications can share a database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from celeriac.exceptions import ConfigurationError

T = TypeVar("T")

log = logging.getLogger("celeriac.redis")

#: Key prefix when the URL does not give one.
DEFAULT_PREFIX = "celeriac"
#: Sockets per process and URL (the pool blocks callers beyond this).
DEFAULT_MAX_CONNECTIONS = 32
#: Longest a socket read may take; blocking commands always wait less than this.
SOCKET_TIMEOUT = 15.0
CONNECT_TIMEOUT = 5.0
#: Errors after which the connection is gone but the server may come back.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

_pools: dict[tuple[str, int], redis.ConnectionPool] = {}
_pools_lock = threading.Lock()


def split_url(url: str) -> tuple[str, str]:
    """``(url for redis-py, key prefix)``: our ``prefix=`` parameter taken out of ``url``."""
    parts = urlparse(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"not a Redis URL: {url!r} (use redis://, rediss:// or unix://)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    kept = []
    for key, value in query:
        if key == "prefix":
            if not value or any(c in value for c in " {}"):
                raise ConfigurationError(f"bad key prefix {value!r} in {url!r}")
            prefix = value
        else:
            kept.append((key, value))
    return urlunparse(parts._replace(query=urlencode(kept))), prefix


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and errors."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunparse(parts._replace(netloc=netloc))


def connection_options(url: str, *, health_check_interval: int = 30) -> dict[str, Any]:
    """Socket settings of every celeriac connection to ``url`` (a redis-py URL).

    TCP keepalive only where there is TCP: redis-py's Unix-socket connection
    refuses the option. redis-py's own retries are off (see the module docstring).
    """
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": health_check_interval, "retry": Retry(NoBackoff(), 0)}
    if urlparse(url).scheme != "unix":
        options["socket_keepalive"] = True
    return options


def client(url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> redis.Redis:
    """A client on this process's shared pool for ``url`` (a redis-py URL, prefix removed).

    Clients are cheap; the pool is what is shared. redis-py's own retries are
    switched off (see the module docstring).
    """
    key = (url, max_connections)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            try:
                pool = redis.BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, timeout=None, **connection_options(url))
            except ValueError as exc:
                raise ConfigurationError(f"bad Redis URL {safe_url(url)!r}: {exc}") from exc
            _pools[key] = pool
    return redis.Redis(connection_pool=pool)


def drop_pools() -> None:
    """Disconnect every shared pool of this process (tests, interpreter shutdown)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.disconnect()


class Reconnector:
    """Runs Redis calls, retrying through connection loss with exponential backoff.

    ``give_up_after`` bounds how long one call keeps retrying (``None``: forever,
    what a worker wants: its running tasks go on and it catches up when Redis is
    back). Past it, ``error(message)`` is raised. Log lines: one warning when the
    connection is first lost, one info line when a call succeeds again.
    """

    def __init__(self, where: str, error: Callable[[str], Exception],
                 give_up_after: float | None = 20.0) -> None:
        self.where = where
        self.error = error
        self.give_up_after = give_up_after
        self._lost_since: float | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T], *, retry: bool = True) -> T:
        """``fn()``; on connection loss retry it if ``retry``, else raise ``error`` at once."""
        started = time.monotonic()
        pause = 0.05
        while True:
            try:
                value = fn()
            except TRANSIENT as exc:
                if isinstance(exc, AuthenticationError):
                    # redis-py files it under ConnectionError; waiting will not fix a password.
                    raise self.error(f"{self.where}: {_describe(exc)}") from exc
                if not retry:
                    # The caller reports the error; a "retrying" line would be false.
                    raise self.error(f"{self.where}: {_describe(exc)}") from exc
                self._lost(exc)
                waited = time.monotonic() - started
                if self.give_up_after is not None and waited >= self.give_up_after:
                    raise self.error(f"{self.where}: {_describe(exc)}") from exc
                if self.give_up_after is not None:
                    pause = min(pause, max(self.give_up_after - waited, 0.01))
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            if self._lost_since is not None:
                self._back()
            return value

    def _lost(self, exc: BaseException) -> None:
        with self._lock:
            if self._lost_since is None:
                self._lost_since = time.monotonic()
                log.warning("lost the connection to %s (%s); retrying with backoff",
                            self.where, _describe(exc))

    def _back(self) -> None:
        with self._lock:
            if self._lost_since is not None:
                log.warning("reconnected to %s after %.1fs", self.where,
                            time.monotonic() - self._lost_since)
                self._lost_since = None


def _describe(exc: BaseException) -> str:
    """One line for a connection error (redis-py's can span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def decode(value: Any) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
