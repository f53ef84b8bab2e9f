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
  messages) is not ours to decide. :class:`Reconnector` (:mod:`celeriac.reconnect`
  with Redis's errors) retries only calls the caller marks as safe to repeat,
  backs off exponentially, and logs one line when the connection is lost and one
  when it is back, instead of a traceback per try.

URLs are redis-py's (``redis://[[user]:password@]host:port/db``, ``rediss://``
for TLS, ``unix:///path/to/socket?db=0``) plus one parameter of ours:
``prefix=NAME`` puts every key under ``NAME:`` instead of ``celeriac:``, so two
applications can share a database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from celeriac import reconnect
from celeriac.exceptions import ConfigurationError

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


class Reconnector(reconnect.Reconnector):
    """:class:`celeriac.reconnect.Reconnector` for Redis: its transient errors, logger and
    the one error that looks transient but is not (a wrong password)."""

    def __init__(self, where: str, error: Callable[[str], Exception],
                 give_up_after: float | None = 20.0) -> None:
        super().__init__(where, error, give_up_after, transient=TRANSIENT,
                         permanent=(AuthenticationError,), logger=log)


def decode(value: Any) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
