"""The ceiling: the same task bodies in a bare ``gevent.pool.Pool``, no queue at all.

``python ceiling.py DIRECTORY KIND COUNT CONCURRENCY`` imports ``benchtasks`` from
DIRECTORY (any system's generated module: only its ``HEADER`` bodies are used, see
``tasks.py``), runs ``feed_body(i)`` (KIND ``feeds``) or ``incr_body()`` (KIND ``noop``)
COUNT times, at most CONCURRENCY at once, and prints ``{"start": t0, "end": t1}`` (wall
clock) as JSON. What a system reaches against this is what its queue costs: the
fetch, the parse and the Redis calls are the same code on the same servers.

KIND ``memory`` is the memory workload's bare run: ``incr_body()`` once (the first task
a worker has run before its idle RSS is read), then it waits in ``BLPOP`` on
:data:`GO` until the harness, sampling its RSS, pushes to it, and runs the COUNT feeds.
What the feed bodies hold at CONCURRENCY at once, in one process, with no queue: the
part of a worker's memory under the feeds that is the workload's, not the queue's.

KIND ``latency`` is the latency workload's bare consumer: it waits in ``BLPOP`` on
:data:`LATENCY_QUEUE` and, for each value (a send time, pushed by ``produce.py
bare-latency``), pushes ``now - sent`` to the task module's ``LATENCY`` list, as a task
body does, until it pops ``stop``. No queue can start a task sooner than this: one push
and one wake-up from a blocking pop.

Run in its own process, monkey-patched first, as a gevent worker would be.
"""

from gevent import monkey

monkey.patch_all()

import importlib  # noqa: E402 - patch first
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from gevent.pool import Pool  # noqa: E402

#: Where ``produce.py bare-latency`` pushes send times for the bare consumer.
LATENCY_QUEUE = "bench:bare-latency"
#: Where the memory workload's bare run waits to be told to start its feeds.
GO = "bench:bare-go"


def bare_consumer(tasks: object) -> None:
    client = tasks.r  # type: ignore[attr-defined]
    latency = tasks.LATENCY  # type: ignore[attr-defined]
    client.ping()
    while True:
        _, value = client.blpop([LATENCY_QUEUE])
        if value == b"stop":
            return
        client.rpush(latency, time.time() - float(value))


def main() -> int:
    directory, kind, count, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.path.insert(0, directory)
    tasks = importlib.import_module("benchtasks")
    if kind == "latency":
        bare_consumer(tasks)
        return 0
    tasks.r.ping()  # connect before the clock starts, as a worker is connected
    if kind == "memory":
        tasks.incr_body()
        tasks.r.blpop([GO])
    pool = Pool(concurrency)
    start = time.time()
    if kind in ("feeds", "memory"):
        for i in range(count):
            pool.spawn(tasks.feed_body, i)
    else:
        for _ in range(count):
            pool.spawn(tasks.incr_body)
    pool.join(raise_error=True)
    print(json.dumps({"start": start, "end": time.time()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
