"""How fast the dashboard's pages answer on a large broker: ``python bench/dashboard_scale.py``.

The issue's bar: every page in under 300 ms with 1,000,000 queued messages, 100,000
dead letters and 100,000 results, in Redis and in SQLite. This fills a broker (a private
``redis-server``, or a SQLite file in a temporary directory) with that much, plus a few
live workers' heartbeats and a full worker event stream (10,000 events, the cap), then
requests each page through the real Flask app (``create_app``; the HTTP server is left
out: it adds the same small cost to every page) and prints the median and the slowest of
``--repeat`` requests per page.

Pages measured are those that exist today (the Overview and its chart's JSON over 1 h and
72 h, Queues, Workers, Dead letters, a task's page, /metrics), with 72 hours of metric
rollups of 20 task names stored (``bench/metrics_read.py``'s fill: one write per minute).
Filling takes a while (about a minute per million messages on SQLite): ``--messages``,
``--dead`` and ``--results`` make it smaller for a quick look.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redisserver import RedisServer
from werkzeug.security import generate_password_hash

from celeriac import Celeriac
from celeriac.backends.base import ResultRecord
from celeriac.brokers.base import OutgoingMessage, WorkerEvent
from celeriac.dashboard import create_app
from celeriac.message import encode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics_read import fill as fill_metrics

BATCH = 10_000
PASSWORD = "bench"
#: The slowest a page may be (the issue's bar).
BAR_MS = 300.0


@contextmanager
def broker_url(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'scale.db'}"
        return
    with RedisServer(directory / "redis") as server:
        yield server.url()


def _bodies(count: int, queue: str) -> Iterator[list[OutgoingMessage]]:
    for start in range(0, count, BATCH):
        yield [OutgoingMessage(queue, encode("shop.resize_image", str(uuid.uuid4()),
                                             (f"/media/{n}.jpg", 640), {}, queue=queue))
               for n in range(start, min(count, start + BATCH))]


def fill(app: Celeriac, messages: int, dead: int, results: int) -> str:
    """Fill the broker and backend; the id of one stored result (for the task page)."""
    broker, began = app.broker, time.monotonic()
    for batch in _bodies(messages, "celery"):
        broker.publish(batch)
    for batch in _bodies(dead, "payments"):
        broker.publish(batch)
        while True:
            deliveries = broker.fetch(["payments"], 1000, consumer="bench", lease=60)
            if not deliveries:
                break
            broker.dead_letter(deliveries, "max deliveries (5) exceeded")
    task_id = ""
    for start in range(0, results, BATCH):
        records = [ResultRecord(str(uuid.uuid4()), "SUCCESS", result=n, name="shop.resize_image",
                                date_done=time.time()) for n in range(start, min(results, start + BATCH))]
        app.backend.store_many(records)
        task_id = records[-1].task_id
    for n in range(4):
        broker.heartbeat(f"bench-{n}@host", {"pool": "gevent", "processes": 2, "concurrency": 200,
                                             "queues": ["celery"], "running": 10, "processed": 1000,
                                             "stalls": {"shop.crunch": 3}}, ttl=3600)
    for start in range(0, 10_000, 1000):
        broker.emit([WorkerEvent("task-blocked", f"bench-{n % 4}@host",
                                 {"task": "shop.crunch", "id": str(n), "pid": 1, "stack": "x" * 800})
                     for n in range(start, start + 1000)])
    fill_metrics(broker, 20, time.time())
    print(f"  filled in {time.monotonic() - began:.0f} s", flush=True)
    return task_id


def measure(app: Celeriac, task_id: str, repeat: int) -> dict[str, list[float]]:
    flask = create_app(app, secret_key="bench")
    client = flask.test_client()
    client.post("/login", data={"password": PASSWORD}, headers={"Origin": "http://localhost"})
    pages = {"overview": "/", "series 1 h": "/overview/series?range=1h",
             "series 72 h": "/overview/series?range=72h", "queues": "/queues",
             "workers": "/workers", "dead letters": "/dead",
             "task": f"/tasks/{task_id}", "metrics": "/metrics"}
    timings: dict[str, list[float]] = {name: [] for name in pages}
    for _ in range(repeat):
        for name, path in pages.items():
            headers = {"Authorization": "Bearer bench"} if name == "metrics" else {}
            began = time.perf_counter()
            response = client.get(path, headers=headers)
            timings[name].append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{path}: HTTP {response.status_code}")
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=["sqlite", "redis", "both"], default="both")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    kinds = ["sqlite", "redis"] if args.broker == "both" else [args.broker]
    slow = False
    for kind in kinds:
        print(f"{kind}: {args.messages:,} queued, {args.dead:,} dead, {args.results:,} results",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp, broker_url(kind, Path(tmp)) as url:
            app = Celeriac("scale", broker_url=url, result_backend=url,
                           dashboard_viewer_password_hash=generate_password_hash(PASSWORD),
                           dashboard_metrics_token="bench")
            try:
                task_id = fill(app, args.messages, args.dead, args.results)
                for name, times in measure(app, task_id, args.repeat).items():
                    median, worst = statistics.median(times), max(times)
                    mark = "" if worst < BAR_MS else f"  over {BAR_MS:.0f} ms"
                    slow = slow or bool(mark)
                    print(f"  {name:<13} median {median:7.1f} ms   slowest {worst:7.1f} ms{mark}")
            finally:
                app.close()
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
