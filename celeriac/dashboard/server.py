"""Serving the dashboard with gevent's own WSGI server (:class:`gevent.pywsgi.WSGIServer`).

Each request and each live tail is a greenlet of one hub; broker and backend calls run in
the hub's thread pool (real threads), so neither a slow round trip nor a SQLite lock
stops the other requests, and the process needs no monkey-patching (it may run beside
anything, and a user's app module is imported unchanged). No other server is needed.

:func:`serve` refuses a non-loopback address without credentials
(:func:`~celeriac.dashboard.auth.check_bind`), prints the one-time login token when no
password is configured, and stops on SIGTERM or SIGINT, or when ``parent_pid`` (the
worker that started it as its sidecar, ``worker --dashboard``) is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from celeriac.dashboard.auth import Credentials, check_bind
from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

log = logging.getLogger("celeriac.dashboard")

#: Seconds between two looks at whether the parent (``worker --dashboard``) still lives.
PARENT_CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class ServeOptions:
    address: str
    port: int
    certfile: str | None = None
    keyfile: str | None = None
    #: Stop when this process is no longer the parent (a sidecar's worker).
    parent_pid: int | None = None


def options_from(app: Celeriac, *, address: str | None = None, port: int | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 parent_pid: int | None = None) -> ServeOptions:
    """The command line's values over the ``dashboard_*`` settings."""
    conf = app.conf
    options = ServeOptions(
        address=address or conf.dashboard_address,
        port=conf.dashboard_port if port is None else port,
        certfile=certfile or conf.dashboard_certfile, keyfile=keyfile or conf.dashboard_keyfile,
        parent_pid=parent_pid)
    if bool(options.certfile) != bool(options.keyfile):
        raise ConfigurationError("TLS needs both dashboard_certfile and dashboard_keyfile "
                                 "(--certfile and --keyfile)")
    return options


def check_start(app: Celeriac, options: ServeOptions) -> Credentials:
    """The credentials to serve with, after refusing an unsafe address."""
    credentials = Credentials.from_settings(app.conf)
    check_bind(options.address, credentials)
    return credentials


def serve(app: Celeriac, options: ServeOptions, *, out: TextIO = sys.stderr,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard of ``app`` until stopped."""
    import gevent
    from gevent.event import Event
    from gevent.pywsgi import LoggingLogAdapter, WSGIServer

    from celeriac.dashboard.app import create_app

    credentials = check_start(app, options)
    hub = gevent.get_hub()

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        return hub.threadpool.apply(fn, args)

    tls = bool(options.certfile)
    flask = create_app(app, credentials=credentials, call=call, tls=tls, sleep=gevent.sleep)
    ssl_args: dict[str, Any] = ({"certfile": options.certfile, "keyfile": options.keyfile}
                                if tls else {})
    access = LoggingLogAdapter(logging.getLogger("celeriac.dashboard.access"), logging.DEBUG)
    server = WSGIServer((options.address, options.port), flask, log=access,
                        error_log=LoggingLogAdapter(log, logging.ERROR), **ssl_args)
    server.start()
    host, port = server.address[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{port}/"
    print(f"celeriac dashboard on {url}", file=out, flush=True)
    if credentials.token is not None:
        print(f"no password configured: log in once with the one-time token {credentials.token}",
              file=out, flush=True)
    if ready is not None:
        ready(url)
    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    if options.parent_pid is not None:
        gevent.spawn(_watch_parent, options.parent_pid, stopping)
    stopping.wait()
    server.stop(timeout=2)
    print("celeriac dashboard stopped", file=out, flush=True)


def _watch_parent(parent_pid: int, stopping: Any) -> None:
    import gevent

    while not stopping.is_set():
        if os.getppid() != parent_pid:
            log.warning("the worker that started this dashboard is gone: stopping")
            stopping.set()
            return
        gevent.sleep(PARENT_CHECK_INTERVAL)
