"""A real ``redis-server`` for tests: started on a free loopback port, in a directory of its own.

Tests of the Redis broker and backend talk to a real server, not a fake: what they
must get right (Lua scripts, blocking commands, what survives a crash) is exactly
what fakes do not reproduce. Each :class:`RedisServer` binds 127.0.0.1 only, keeps
its config, log and AOF files in its own directory, and runs in the foreground as
our child, so a test can SIGKILL it and start it again on the *same* port and
directory (clients reconnect to the URL they had; AOF data survives).

Ports are picked *below* the kernel's ephemeral range: outgoing connections (the
clients' own reconnect attempts while the server is down, say) are given local
ports from that range, so one of them can never be sitting on our port when a
restart binds it again.

The binary is found on PATH (or ``$CELERIAC_REDIS_SERVER``). Without one, tests
skip locally, but with ``CI=true`` they fail: a CI machine without redis-server
would otherwise pass by skipping every Redis test.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest

if TYPE_CHECKING:
    import redis

HOST = "127.0.0.1"
#: Names the redis-server binary to use instead of the one found on PATH.
BINARY_ENV = "CELERIAC_REDIS_SERVER"
#: Lowest port :func:`free_port` picks: clear of the well-known and registered-service crowd.
LOWEST_PORT = 20000
#: How often :meth:`RedisServer.start` tries a new port when the one it picked was taken meanwhile.
PORT_ATTEMPTS = 5
#: What redis-server logs when its port is taken.
ADDRESS_IN_USE = "Address already in use"


class RedisServerError(RuntimeError):
    """redis-server did not start, or stopped answering; the message ends with its log tail."""


def in_ci() -> bool:
    """True when ``CI`` says so (GitHub, GitLab and most others set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def find_redis_server() -> str | None:
    """Path of the redis-server binary: ``$CELERIAC_REDIS_SERVER`` if set, else PATH's; None if absent."""
    return shutil.which(os.environ.get(BINARY_ENV) or "redis-server")


def require_redis_server() -> str:
    """The redis-server binary, or the current test skipped (locally) or failed (``CI=true``)."""
    binary = find_redis_server()
    if binary is not None:
        return binary
    message = (f"redis-server not found on PATH (nor ${BINARY_ENV}); "
               "install it (apt-get install redis-server) or run ./scripts/test, which does")
    if in_ci():
        pytest.fail(f"{message}. CI=true: a missing server fails the run instead of skipping "
                    "every Redis test", pytrace=False)
    pytest.skip(message)


def _ephemeral_low() -> int:
    """Lowest port the kernel hands to outgoing connections (Linux; the IANA default elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def _bindable(port: int) -> bool:
    """True if nothing uses ``port`` on 127.0.0.1 (not even a connection lingering in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now, below the ephemeral range if there is room."""
    low = _ephemeral_low()
    if low - LOWEST_PORT >= 1000:
        for _ in range(200):
            port = random.randrange(LOWEST_PORT, low)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # let the kernel choose
        sock.bind((HOST, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


class RedisServer:
    """One redis-server subprocess on 127.0.0.1, with its files in ``directory``.

    Persistence is off by default (``save ""``: nothing written, fast). With
    ``appendonly=True`` every write is appended to the AOF and fsynced before the
    reply (``appendfsync always``), so a write the client saw acknowledged survives
    :meth:`kill` and :meth:`restart`: what fault tests rely on.

    The port is picked on the first :meth:`start` (or given) and kept from then on.
    ``directory`` defaults to a new temporary directory that :meth:`close` removes;
    a directory passed in is left alone (pytest's ``tmp_path`` keeps it for a look
    at ``redis.log`` after a failure).
    """

    def __init__(self, directory: Path | str | None = None, *, appendonly: bool = False,
                 port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or require_redis_server()
        self.appendonly = appendonly
        self._owns_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="celeriac-redis-") if directory is None
                              else directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or 0
        self._port_fixed = port is not None
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return (f"RedisServer(port={self.port}, directory={str(self.directory)!r}, "
                f"appendonly={self.appendonly}, running={self.running})")

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "redis.conf"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers; on the first start, pick the port.

        If a freshly picked port was taken in the moment between picking and binding
        (another test run, say), try another; a port kept from an earlier start is
        never changed, since clients hold URLs naming it.
        """
        if self.running:
            raise RedisServerError(f"{self!r} is already running")
        attempts = 1 if self._port_fixed else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            if not self._port_fixed:
                self.port = free_port()
            self._spawn()
            try:
                self.wait_ready(timeout)
            except RedisServerError:
                self.kill()
                if attempt == attempts or ADDRESS_IN_USE not in self.log_tail():
                    raise
                continue
            self._port_fixed = True
            return

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait: a clean shutdown (with ``appendonly``, the AOF is fsynced first)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise RedisServerError(f"redis-server ignored SIGTERM for {timeout}s; killed it\n"
                                       f"{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL and wait: a crash. Only writes already fsynced (``appendonly``) survive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, timeout: float = 10.0) -> None:
        """:meth:`stop`, then :meth:`start` on the same port and directory (a no-op stop if dead)."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop, and remove the directory if it was our own temporary one."""
        try:
            self.stop()
        finally:
            if self._owns_directory:
                shutil.rmtree(self.directory, ignore_errors=True)

    def _spawn(self) -> None:
        """Write the config for the current port and start redis-server in the foreground."""
        lines = [
            f"bind {HOST}",
            f"port {self.port}",
            f'dir "{self.directory}"',
            f'logfile "{self.log_path}"',
            "daemonize no",
            'save ""',
            f"appendonly {'yes' if self.appendonly else 'no'}",
            "appendfsync always",
            "protected-mode yes",
            "always-show-logo no",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        # Output before the logfile is open (a bad config, say) goes to stdout/stderr.
        with (self.directory / "redis.stdout").open("ab") as out:
            self.proc = subprocess.Popen([self.binary, str(self.config_path)], cwd=self.directory,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    # -- readiness and inspection -----------------------------------------------------

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until *our* process answers PING (it may be loading an AOF for a while).

        A PING alone is not proof: if our process failed to bind, another server
        already on the port could answer. So the answering server's ``process_id``
        must be our child's pid.
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if self.proc is None:
                raise RedisServerError(f"{self!r} was never started")
            code = self.proc.poll()
            if code is not None:
                raise RedisServerError(f"redis-server on port {self.port} exited with status {code}; "
                                       f"log tail:\n{self.log_tail()}")
            try:
                pid = self._answering_pid()
            except (OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if pid == self.proc.pid:
                    return
                last = f"port {self.port} is answered by another redis-server (pid {pid})"
            if time.monotonic() >= deadline:
                raise RedisServerError(f"redis-server on port {self.port} not ready after {timeout}s "
                                       f"({last}); log tail:\n{self.log_tail()}")
            time.sleep(0.02)

    def _answering_pid(self) -> int:
        """PING, then the ``process_id`` from ``INFO server``; ValueError if the reply is not that."""
        with socket.create_connection((HOST, self.port), timeout=2.0) as sock, \
                sock.makefile("rb") as reader:
            sock.sendall(b"PING\r\n")
            reply = reader.readline()
            if reply != b"+PONG\r\n":  # e.g. "-LOADING ..." while an AOF is read back
                raise ValueError(f"PING answered {reply.decode(errors='replace').strip()!r}")
            sock.sendall(b"INFO server\r\n")
            header = reader.readline()
            if not header.startswith(b"$"):
                raise ValueError(f"INFO answered {header.decode(errors='replace').strip()!r}")
            info = reader.read(int(header[1:]) + 2).decode(errors="replace")
        for line in info.splitlines():
            if line.startswith("process_id:"):
                return int(line.partition(":")[2])
        raise ValueError("no process_id in INFO server")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of redis-server's log and of anything it printed before opening it."""
        parts = []
        for path in (self.directory / "redis.stdout", self.log_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or f"(nothing logged in {self.directory})"

    def url(self, db: int = 0, prefix: str | None = None) -> str:
        """``redis://127.0.0.1:PORT/DB``, plus ``?prefix=NAME`` (ours: keys go under ``NAME:``)."""
        if not self.port:
            raise RedisServerError(f"{self!r} has no port yet: start() it first")
        url = f"redis://{HOST}:{self.port}/{db}"
        if prefix is not None:
            url += "?" + urlencode({"prefix": prefix})
        return url

    def client(self, db: int = 0) -> redis.Redis:
        """A plain redis-py client, for looking at keys directly (bytes in, bytes out)."""
        import redis

        return redis.Redis(host=HOST, port=self.port, db=db, socket_timeout=10.0,
                           socket_connect_timeout=5.0)
