"""End-to-end demo on the embedded SQLite broker: start a worker, send tasks, show results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
console = Console()


def main() -> int:
    os.chdir(HERE)
    for leftover in ("celeriac.db", "celeriac.db-wal", "celeriac.db-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    sys.path.insert(0, HERE)
    from tasks import add, flaky, slow_square

    console.print("[bold]starting[/] celeriac -A tasks worker -P threads -c 8")
    worker = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "tasks", "worker",
                               "-P", "threads", "-c", "8", "-l", "WARNING"])
    try:
        started = time.monotonic()
        sums = [add.delay(i, i) for i in range(100)]
        squares = [slow_square.delay(i) for i in range(16)]
        retried = flaky.delay(2)
        table = Table(title="results")
        table.add_column("task")
        table.add_column("result")
        total = sum(r.get(timeout=30) for r in sums)
        table.add_row("100 x add(i, i)", f"sum = {total}")
        table.add_row("16 x slow_square(i), 0.2 s each, 8 threads",
                      str([r.get(timeout=30) for r in squares]))
        table.add_row("flaky(2) with retries", str(retried.get(timeout=30)))
        console.print(table)
        console.print(f"all done in {time.monotonic() - started:.2f}s")
        subprocess.run([sys.executable, "-m", "celeriac", "-A", "tasks", "status"], check=True)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
