"""Producer side of ``bench/redis_compare.py``, run as a subprocess per step.

``python produce.py DIRECTORY ACTION COUNT`` imports ``benchtasks`` from DIRECTORY
(one framework's generated module, see ``frameworks.py``), does ACTION and prints one
JSON object on stdout. A fresh process per step keeps the four frameworks' clients
apart: none of them is ever imported next to another, and none is gevent-patched.

* ``enqueue``: ``COUNT`` sequential enqueues; the first one (connection set-up,
  queue declaration) is made before the clock starts, so ``COUNT - 1`` are timed.
* ``bulk``: one bulk call of ``COUNT`` messages, timed whole.
* ``warm-bulk``: one untimed enqueue first (connection set-up, queue declaration, as
  ``enqueue``), then one bulk call of ``COUNT - 1`` messages, timed.
* ``fill``: ``COUNT`` messages queued the fastest way the framework has (its bulk call
  when there is one, else sequential enqueues), timed whole: filling a queue before a
  measurement (``scripts/bench``), not a measurement of its own.
* ``feeds``: ``COUNT`` sequential sends of the feed task (``bench/amqp_compare.py``),
  timed whole.
* ``latency``: ``COUNT`` samples of enqueue-to-start latency, one task at a time
  with 20 ms between them; the worker must be running and idle.
* ``roundtrip``: no framework, the bound of any sequential enqueue: ``COUNT``
  sequential ``LPUSH`` of a message-sized value with a plain redis-py client, each
  waiting for Redis's answer (as a publish must before ``.delay()`` returns), the first
  one untimed as in ``enqueue``.
* ``bare-latency``: no framework, ``latency``'s samples against the bare consumer of
  ``bench/harness/ceiling.py`` (``LPUSH`` of the send time, ``BLPOP`` there).
* ``roundtrip-bulk``: no framework, the bound of a bulk publish: ``COUNT``
  message-sized values in ``LPUSH`` commands of 10,000 values each.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any

import redis


def enqueue(tasks: Any, count: int) -> dict[str, Any]:
    tasks.enqueue(1)
    started = time.perf_counter()
    tasks.enqueue(count - 1)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": (count - 1) / seconds}


def bulk(tasks: Any, count: int) -> dict[str, Any]:
    if tasks.enqueue_bulk is None:
        return {"skipped": getattr(tasks, "BULK_MISSING", "no bulk-publish API")}
    started = time.perf_counter()
    try:
        tasks.enqueue_bulk(count)
    except Exception as exc:  # an API still being written: report it, measure the rest
        return {"skipped": f"the bulk call failed: {exc!r}"}
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": count / seconds}


def warm_bulk(tasks: Any, count: int) -> dict[str, Any]:
    if tasks.enqueue_bulk is None:
        return {"skipped": getattr(tasks, "BULK_MISSING", "no bulk-publish API")}
    tasks.enqueue(1)
    started = time.perf_counter()
    tasks.enqueue_bulk(count - 1)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": (count - 1) / seconds}


def fill(tasks: Any, count: int) -> dict[str, Any]:
    started = time.perf_counter()
    if tasks.enqueue_bulk is not None:
        tasks.enqueue_bulk(count)
    else:
        tasks.enqueue(count)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": count / seconds}


def feeds(tasks: Any, count: int) -> dict[str, Any]:
    started = time.perf_counter()
    tasks.enqueue_feeds(count)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": count / seconds}


#: A value the size of celeriac's no-op message (its envelope is 740 bytes).
BARE_MESSAGE = b"x" * 740
BARE_QUEUE = "bench:bare"
#: Where the bare consumer of bench/harness/ceiling.py waits (its LATENCY_QUEUE; that
#: module patches with gevent on import, so it is not imported here).
BARE_LATENCY_QUEUE = "bench:bare-latency"


def roundtrip(tasks: Any, count: int) -> dict[str, Any]:
    client = redis.Redis.from_url(tasks.URL)
    client.lpush(BARE_QUEUE, BARE_MESSAGE)
    started = time.perf_counter()
    for _ in range(count - 1):
        client.lpush(BARE_QUEUE, BARE_MESSAGE)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": (count - 1) / seconds}


def roundtrip_bulk(tasks: Any, count: int) -> dict[str, Any]:
    client = redis.Redis.from_url(tasks.URL)
    client.ping()
    started = time.perf_counter()
    for start in range(0, count, 10_000):
        client.lpush(BARE_QUEUE, *([BARE_MESSAGE] * min(10_000, count - start)))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": count / seconds}


def bare_latency(tasks: Any, count: int) -> dict[str, Any]:
    client = redis.Redis.from_url(tasks.URL)
    try:
        return latency(tasks, count, lambda sent: client.lpush(BARE_LATENCY_QUEUE, sent))
    finally:
        client.lpush(BARE_LATENCY_QUEUE, "stop")


def latency(tasks: Any, count: int, send: Any = None) -> dict[str, Any]:
    send = send or tasks.enqueue_latency
    client = redis.Redis.from_url(tasks.URL)
    client.delete(tasks.LATENCY)
    samples: list[float] = []
    for _ in range(count):
        send(time.time())
        item = client.blpop([tasks.LATENCY], timeout=30)
        if item is None:
            raise SystemExit(f"no task started within 30 s (after {len(samples)} samples)")
        samples.append(float(item[1]))
        time.sleep(0.02)
    return {"samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory")
    parser.add_argument("action", choices=["enqueue", "bulk", "warm-bulk", "fill", "feeds",
                                           "latency", "bare-latency", "roundtrip",
                                           "roundtrip-bulk"])
    parser.add_argument("count", type=int)
    options = parser.parse_args()
    sys.path.insert(0, options.directory)
    tasks = importlib.import_module("benchtasks")
    action = {"enqueue": enqueue, "bulk": bulk, "warm-bulk": warm_bulk, "fill": fill, "feeds": feeds,
              "latency": latency, "bare-latency": bare_latency, "roundtrip": roundtrip,
              "roundtrip-bulk": roundtrip_bulk}[options.action]
    print(json.dumps(action(tasks, options.count)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
