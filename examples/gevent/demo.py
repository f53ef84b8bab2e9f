"""The seed's claim, measured: green threads versus processes on slow feeds.

Starts the loopback feed hub (0.5 s per answer), then runs the real CLI worker
twice on the embedded SQLite broker:

* ``-P gevent -c 1000`` over 2000 feeds, with a progress bar;
* ``-P prefork -c 2`` over 40 feeds;

and prints feeds/s for both side by side. Feeds/s is counted from the first
enqueue to the last stored result, as a user would see it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

HERE = Path(__file__).resolve().parent
console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=HERE, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def wait_for_log(log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} did not appear in {log}:\n{log.read_text()}")


def run(tasks: Any, hub: str, feeds: int, pool_args: list[str], label: str) -> float:
    log = HERE / f"worker-{pool_args[1]}.log"
    worker = start(["-m", "celeriac", "-A", "tasks", "worker", "-l", "WARNING", *pool_args,
                    "--prefetch-multiplier", "1"], log)
    try:
        deadline = time.monotonic() + 30
        while not tasks.app.broker.workers():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.05)
        started = time.monotonic()
        results = [tasks.fetch_feed.delay(f"{hub}/feeds/{n}.xml") for n in range(feeds)]
        with Progress(TextColumn(f"[bold]{label:24}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task(label, total=feeds)
            while True:
                stats = tasks.app.broker.stats().get("default")
                left = (stats.ready + stats.in_flight) if stats else 0
                progress.update(bar, completed=feeds - left)
                if not left:
                    break
                time.sleep(0.1)
        items = sum(len(r.get(timeout=60)["items"]) for r in results)
        elapsed = time.monotonic() - started
        assert items == feeds * 5, f"expected {feeds * 5} items, parsed {items}"
        return feeds / elapsed
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--green-feeds", type=int, default=2000)
    parser.add_argument("--prefork-feeds", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.5)
    options = parser.parse_args()
    os.chdir(HERE)
    for leftover in HERE.glob("feeds.db*"):
        leftover.unlink()
    url = f"sqlite:///{HERE / 'feeds.db'}"
    os.environ["CELERIAC_BROKER_URL"] = os.environ["CELERIAC_RESULT_BACKEND"] = url
    port = free_port()
    hub_log = HERE / "feedhub.log"
    hub = start(["feedhub.py", "--port", str(port), "--latency", str(options.latency)], hub_log)
    try:
        wait_for_log(hub_log, "feed hub on")
        sys.path.insert(0, str(HERE))
        import tasks

        base = f"http://127.0.0.1:{port}"
        green = run(tasks, base, options.green_feeds, ["-P", "gevent", "-c", "1000"],
                    "gevent -c 1000")
        forked = run(tasks, base, options.prefork_feeds, ["-P", "prefork", "-c", "2"],
                     "prefork -c 2")
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(10)
    table = Table(title=f"feeds/s, {options.latency}s per feed, SQLite broker")
    table.add_column("pool")
    table.add_column("feeds", justify="right")
    table.add_column("feeds/s", justify="right")
    table.add_row("-P gevent -c 1000", str(options.green_feeds), f"{green:.0f}")
    table.add_row("-P prefork -c 2", str(options.prefork_feeds), f"{forked:.1f}")
    console.print(table)
    console.print(f"green threads: [bold]{green / forked:.0f}x[/] the feeds/s of two processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
