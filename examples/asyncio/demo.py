"""The same feeds, two ways of waiting: coroutines on -P asyncio against greenlets on -P gevent.

Starts the loopback feed hub of ``examples/gevent`` (0.5 s per answer), then runs the
real CLI worker twice on the embedded SQLite broker, over the same feeds:

* ``-P asyncio -c 1000`` with this directory's ``tasks.py`` (``async def``, aiohttp);
* ``-P gevent -c 1000`` with ``examples/gevent/tasks.py`` (a plain function, requests);

and prints feeds/s side by side. Feeds/s is counted from the first enqueue to the last
stored result, as a user would see it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from celeriac import Celeriac

HERE = Path(__file__).resolve().parent
GEVENT = HERE.parent / "gevent"
console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(args: list[str], cwd: Path, log: Path, url: str = "") -> subprocess.Popen[bytes]:
    env = {**os.environ, "CELERIAC_BROKER_URL": url, "CELERIAC_RESULT_BACKEND": url} if url else None
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def wait_for_log(log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} did not appear in {log}:\n{log.read_text()}")


def run(example: Path, pool: str, feeds: int, hub: str, workdir: Path) -> float:
    """Feeds/s of ``example``'s ``tasks.fetch_feed`` on a worker ``-P pool -c 1000``."""
    url = f"sqlite:///{workdir / f'feeds-{pool}.db'}"
    log = workdir / f"worker-{pool}.log"
    worker = start(["-m", "celeriac", "-A", "tasks", "worker", "-l", "WARNING", "-P", pool,
                    "-c", "1000", "--prefetch-multiplier", "1"], example, log, url)
    # The client needs no task module: it sends by name, as another service would.
    client = Celeriac("demo", broker=url, backend=url)
    try:
        deadline = time.monotonic() + 30
        while not client.broker.workers():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.05)
        label = f"{pool} -c 1000"
        started = time.monotonic()
        results = [client.send_task("tasks.fetch_feed", args=(f"{hub}/feeds/{n}.xml",))
                   for n in range(feeds)]
        with Progress(TextColumn(f"[bold]{label:24}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task(label, total=feeds)
            for done, result in enumerate(results, 1):
                items = len(result.get(timeout=60)["items"])
                if items != 5:
                    raise RuntimeError(f"{result.id}: expected 5 items, parsed {items}")
                progress.update(bar, completed=done)
        return feeds / (time.monotonic() - started)
    finally:
        client.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--workdir", type=Path, help="keep the databases and logs here")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="celeriac-feeds-") as tmp:
        workdir = options.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        hub_log = workdir / "feedhub.log"
        hub = start([str(GEVENT / "feedhub.py"), "--port", str(port), "--latency",
                     str(options.latency)], GEVENT, hub_log)
        try:
            wait_for_log(hub_log, "feed hub on")
            base = f"http://127.0.0.1:{port}"
            rates = {pool: run(example, pool, options.feeds, base, workdir)
                     for pool, example in (("asyncio", HERE), ("gevent", GEVENT))}
        finally:
            hub.send_signal(signal.SIGTERM)
            hub.wait(10)
    table = Table(title=f"feeds/s, {options.feeds} feeds of {options.latency}s each, SQLite broker")
    table.add_column("pool")
    table.add_column("task")
    table.add_column("feeds/s", justify="right")
    table.add_row("-P asyncio -c 1000", "async def, aiohttp", f"{rates['asyncio']:.0f}")
    table.add_row("-P gevent -c 1000", "def, requests", f"{rates['gevent']:.0f}")
    console.print(table)
    console.print(f"coroutines: [bold]{rates['asyncio'] / rates['gevent']:.2f}x[/] "
                  "the feeds/s of green threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
