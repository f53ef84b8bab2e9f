"""The servers a benchmark run starts for itself: Redis, RabbitMQ, the feed hub.

All of them private and loopback-only, on free ports, their files in the run's directory,
stopped when the run ends (also on SIGTERM, which the CLI turns into ``SystemExit``):
nothing a benchmark measures is ever a system service or another user's server.

* ``redis_server``: ``/usr/bin/redis-server`` without persistence (moved here from
  ``bench/redis_compare.py``);
* ``rabbit_server``: a private RabbitMQ node, ``tests/rabbitserver.py``'s (its own epmd,
  cookie and mnesia; Debian's ``rabbitmq-server`` or ``$CELERIAC_RABBITMQ_DIR``);
* ``feed_hub``: ``examples/gevent/feedhub.py``, RSS documents after a fixed latency
  (moved here from ``bench/amqp_compare.py``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .procs import REPO, BenchError, free_port, tail

REDIS_SERVER = "/usr/bin/redis-server"
FEEDHUB = REPO / "examples" / "gevent" / "feedhub.py"


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port; yields its URL."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def redis_version() -> str:
    """``redis-server --version``'s ``v=`` field."""
    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or "unknown"


@contextmanager
def feed_hub(python: Path | str, root: Path, latency: float) -> Iterator[int]:
    """``examples/gevent/feedhub.py`` on a free loopback port; yields the port."""
    port = free_port()
    log = root / "feedhub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(python), str(FEEDHUB), "--port", str(port), "--latency", str(latency)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "feed hub on" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the feed hub did not start:\n{tail(log.read_text())}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def _rabbit_module() -> Any:
    """``tests/rabbitserver.py``, imported from the checkout (it is the tests' fixture)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import rabbitserver

    return rabbitserver


def rabbitmq_missing() -> str | None:
    """Why no RabbitMQ node can be started here, or None."""
    if _rabbit_module().find_rabbitmq() is None:
        return ("rabbitmq-server not found (apt-get install rabbitmq-server, or set "
                "CELERIAC_RABBITMQ_DIR)")
    return None


@contextmanager
def rabbit_server(directory: Path) -> Iterator[Any]:
    """A private RabbitMQ node (``tests/rabbitserver.RabbitServer``), started; yields it.
    ``.url(server.vhost())`` is a fresh vhost's URL, ``.ctl("version")`` its version."""
    module = _rabbit_module()
    with module.RabbitServer(directory, binary_dir=module.find_rabbitmq()) as server:
        yield server
