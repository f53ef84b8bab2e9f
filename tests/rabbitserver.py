"""A real RabbitMQ node for tests: private, on free loopback ports, in a directory of its own.

Tests of the AMQP connection (and, later, the ``amqp://`` broker) talk to a real
RabbitMQ, not a fake: what they must get right (confirms, transactions, what a
dropped connection returns, heartbeats) is exactly what fakes do not reproduce.

Each :class:`RabbitServer` is a node of its own: its own node name, Erlang
cookie (``HOME``), mnesia, log and config files in its directory, its own epmd
on its own port, and every listener (epmd, Erlang distribution, AMQP) on
127.0.0.1 only. It never reads ``/etc/rabbitmq`` and never touches a system node
the package may have started on 5672. Ports come from :func:`redisserver.free_port`
(below the ephemeral range), so :meth:`RabbitServer.restart` binds the same
port again and clients reconnect to the URL they had.

Starting a node costs 8-12 s on a loaded machine and every ``rabbitmqctl`` call
~1 s (a fresh Erlang VM each), so: one node per test session, vhosts created in
batches with one ``rabbitmqctl eval`` (a test gets a vhost of its own, never
reused, so no cleanup), and a second node only for tests that kill or restart it.

The scripts are run from ``/usr/lib/rabbitmq/bin`` (or ``$CELERIAC_RABBITMQ_DIR``)
directly: ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the
``rabbitmq`` user and writes to /var/log. Without them, tests skip locally, but
with ``CI=true`` they fail, as a missing redis-server does.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest
from redisserver import HOST, free_port, in_ci

#: Names the directory holding ``rabbitmq-server`` and ``rabbitmqctl`` (Debian's by default).
DIR_ENV = "CELERIAC_RABBITMQ_DIR"
DEFAULT_DIR = "/usr/lib/rabbitmq/bin"
#: Vhosts made per ``rabbitmqctl eval`` (one call costs ~1 s whatever the number).
VHOST_BATCH = 32
#: ``rabbitmqctl`` exit status while the node is not (yet) registered with epmd.
NODE_DOWN = 69
USER = "guest"
PASSWORD = "guest"

_names = itertools.count(1)


class RabbitServerError(RuntimeError):
    """The node did not start or stop, or ``rabbitmqctl`` failed; the message ends with its log tail."""


def find_rabbitmq() -> Path | None:
    """The directory with ``rabbitmq-server`` and ``rabbitmqctl``, or None when they are missing."""
    directory = Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)
    if all(os.access(directory / name, os.X_OK) for name in ("rabbitmq-server", "rabbitmqctl")):
        return directory
    return None


def require_rabbitmq() -> Path:
    """The RabbitMQ scripts' directory, or the current test skipped (locally) or failed (``CI=true``)."""
    directory = find_rabbitmq()
    if directory is not None:
        return directory
    message = (f"RabbitMQ not found in {os.environ.get(DIR_ENV) or DEFAULT_DIR} (nor ${DIR_ENV}); "
               "install it (apt-get install rabbitmq-server) or run ./scripts/test, which does")
    if in_ci():
        pytest.fail(f"{message}. CI=true: a missing server fails the run instead of skipping "
                    "every RabbitMQ test", pytrace=False)
    pytest.skip(message)


class RabbitServer:
    """One private RabbitMQ node on 127.0.0.1, with all its files in ``directory``.

    The ports (AMQP, Erlang distribution, epmd) are picked once, at construction,
    and kept across :meth:`restart`. ``directory`` defaults to a new temporary one
    that :meth:`close` removes; one passed in is left for a look at the logs.
    """

    def __init__(self, directory: Path | str | None = None, *, binary_dir: Path | None = None,
                 consumer_timeout_ms: int = 1_800_000) -> None:
        self.binary_dir = binary_dir or require_rabbitmq()
        self._owns_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="celeriac-rabbit-") if directory is None
                              else directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.node = f"celeriac-{os.getpid()}-{next(_names)}@localhost"
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.consumer_timeout_ms = consumer_timeout_ms
        self.proc: subprocess.Popen[bytes] | None = None
        self._vhosts: list[str] = []
        self._vhost_counter = itertools.count(1)
        #: Seconds the last start / stop took (tests report them; never asserted on).
        self.start_seconds = 0.0
        self.stop_seconds = 0.0

    def __repr__(self) -> str:
        return (f"RabbitServer(node={self.node!r}, port={self.port}, "
                f"directory={str(self.directory)!r}, running={self.running})")

    def __enter__(self) -> RabbitServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_dir(self) -> Path:
        return self.directory / "log"

    # -- environment ------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment of the server and of every ``rabbitmqctl`` call: nothing from /etc."""
        d = self.directory
        env = dict(os.environ)
        env.update({
            "HOME": str(d),  # the .erlang.cookie the node and rabbitmqctl share
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": HOST,
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),  # absent: /etc's is not read
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            # The distribution port listens on 0.0.0.0 without this (measured).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def _write_config(self) -> None:
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {HOST}:{self.port}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = info\n"
            f"consumer_timeout = {self.consumer_timeout_ms}\n")
        (self.directory / "enabled_plugins").write_text("[].\n")

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n NODE ARGS`` against this node (~1 s: a fresh Erlang VM)."""
        try:
            done = subprocess.run([str(self.binary_dir / "rabbitmqctl"), "-n", self.node, *args],
                                  env=self.env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RabbitServerError(f"rabbitmqctl {' '.join(args)} took over {timeout}s\n"
                                    f"{self.log_tail()}") from exc
        if check and done.returncode != 0:
            raise RabbitServerError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}: "
                                    f"{done.stderr.strip() or done.stdout.strip()}\n{self.log_tail()}")
        return done

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Start the node and wait until its applications are up (8-12 s measured)."""
        if self.running:
            raise RabbitServerError(f"{self!r} is already running")
        started = time.monotonic()
        self._write_config()
        with (self.directory / "out.log").open("ab") as out:
            self.proc = subprocess.Popen([str(self.binary_dir / "rabbitmq-server")], env=self.env(),
                                         cwd=self.directory, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + timeout
        while True:
            # await_startup exits 69 at once while the node is not registered with epmd yet.
            left = max(deadline - time.monotonic(), 1.0)
            done = self.ctl("await_startup", "--timeout", str(int(left)), timeout=left + 30, check=False)
            if done.returncode == 0:
                break
            code = self.proc.poll()
            if code is not None or time.monotonic() >= deadline:
                self.kill()
                raise RabbitServerError(
                    f"{self!r} did not start (server exit status {code}; await_startup: "
                    f"{done.returncode} {done.stderr.strip()[-300:]})\n{self.log_tail()}")
            time.sleep(0.2)
        self.start_seconds = time.monotonic() - started

    def stop(self, timeout: float = 60.0) -> None:
        """A clean shutdown (``rabbitmqctl stop``, 1-6 s), then our epmd is killed too."""
        started = time.monotonic()
        if self.running:
            assert self.proc is not None
            self.ctl("stop", timeout=timeout, check=False)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._kill_epmd()
        self.stop_seconds = time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the node's process group (the server script, beam and its helpers): a crash.

        epmd is a daemon outside the group and stays, as it would on a real machine.
        """
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def restart(self, *, crash: bool = False, timeout: float = 90.0) -> None:
        """Stop (or, with ``crash``, SIGKILL) and start again: same node, ports and data."""
        if crash:
            self.kill()
        elif self.running:
            assert self.proc is not None
            self.ctl("stop", timeout=timeout, check=False)
            self.proc.wait(timeout)
        self.start(timeout)

    def close(self) -> None:
        """Stop, and remove the directory if it was our own temporary one."""
        try:
            self.stop()
        finally:
            if self._owns_directory:
                shutil.rmtree(self.directory, ignore_errors=True)

    def _kill_epmd(self) -> None:
        """Kill our epmd; retried, since it refuses while the stopping node is still registered."""
        epmd = shutil.which("epmd", path=f"{os.environ.get('PATH', '')}:/usr/lib/erlang/bin")
        if epmd is None:
            return
        deadline = time.monotonic() + 15
        while True:
            done = subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], env=self.env(),
                                  capture_output=True, text=True, timeout=30)
            out = done.stdout + done.stderr
            # "Killed", or nothing listening any more: done. "Killing not allowed": a node is
            # still registered (it unregisters just after `stop` returns): again.
            if "not allowed" not in out or time.monotonic() >= deadline:
                return
            time.sleep(0.2)

    # -- vhosts, connections, logs ------------------------------------------------------

    def vhost(self) -> str:
        """A new, empty vhost (``guest`` may do everything on it); made in batches of 32."""
        if not self._vhosts:
            names = [f"t{os.getpid()}-{next(self._vhost_counter)}" for _ in range(VHOST_BATCH)]
            self.add_vhosts(names)
            self._vhosts.extend(reversed(names))
        return self._vhosts.pop()

    def add_vhosts(self, names: list[str]) -> None:
        """Create ``names`` with full permissions for ``guest``, in one ``rabbitmqctl eval``."""
        binaries = ", ".join(f'<<"{name}">>' for name in names)
        self.ctl("eval", "[begin rabbit_vhost:add(V, <<\"fixture\">>), "
                         f"rabbit_auth_backend_internal:set_permissions(<<\"{USER}\">>, V, "
                         "<<\".*\">>, <<\".*\">>, <<\".*\">>, <<\"fixture\">>) end "
                         f"|| V <- [{binaries}]].")

    def url(self, vhost: str) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/VHOST``."""
        return f"amqp://{USER}:{PASSWORD}@{HOST}:{self.port}/{vhost}"

    def connection_names(self) -> list[str]:
        """The ``connection_name`` client property of every open AMQP connection."""
        done = self.ctl("list_connections", "client_properties", "--formatter", "json", "--quiet")
        names = []
        for row in json.loads(done.stdout or "[]"):
            props = row.get("client_properties") or []
            # rabbitmqctl's JSON renders the property table as [name, type, value] triples.
            for prop in props:
                if isinstance(prop, list) and len(prop) == 3 and prop[0] == "connection_name":
                    names.append(str(prop[2]))
        return names

    def close_connection(self, name: str, reason: str = "closed by a test") -> int:
        """Close (server-side) every connection whose ``connection_name`` is ``name``; how many."""
        term = (
            "length([ok || P <- rabbit_networking:connections(), "
            "begin [{client_properties, Props}] = rabbit_networking:connection_info(P, "
            "[client_properties]), lists:member({<<\"connection_name\">>, longstr, "
            f"<<\"{name}\">>}}, Props) end, "
            f"ok == rabbit_networking:close_connection(P, \"{reason}\")]).")
        done = self.ctl("eval", term)
        return int(done.stdout.strip() or 0)

    def _log_files(self) -> list[Path]:
        return [*sorted(self.log_dir.glob("*.log")), self.directory / "out.log"]

    def log_text(self) -> str:
        """Everything the node logged so far (its log files and its console output)."""
        parts = []
        for path in self._log_files():
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` of each log file, for error messages."""
        parts = []
        for path in self._log_files():
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or f"(nothing logged in {self.directory})"
