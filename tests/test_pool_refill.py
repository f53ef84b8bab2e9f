"""A green pool's freed slots get their next messages at the hub's next turn
(``Pool.on_free``, ``Consumer._refill``), not when the consumer's loop next runs.

The loop is one greenlet among the slots, and it spends most of its turns in broker
round trips (settling, fetching): when a wave of tasks ended together, each freed slot
waited for the loop's round trips, and each wave started later and more spread out than
the one before (``bench/asyncio_compare.py``'s sleep workload). Patching is process-wide,
so each probe runs in a subprocess of its own, as a worker process would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

POOL_PROBE = """
import json, warnings
warnings.filterwarnings("ignore")
from celeriac.pools import get_pool

pool_class = get_pool("gevent")
pool_class.prepare_process()
import gevent
pool = pool_class(2)
pool.start()
import gevent.event
order, calls, backlog, done = [], [], ["c", "d"], gevent.event.Event()


def job(name):
    def run():
        order.append(("start", name, id(gevent.getcurrent())))
        gevent.sleep(0.05)  # a and b: one deadline, so both wake in one turn of the hub
        order.append(("end", name, id(gevent.getcurrent())))
        if len(order) == 8:
            done.set()
    return run


def refill():
    calls.append([id(gevent.getcurrent()), pool.free_slots()])
    while backlog and pool.free_slots():
        pool.submit(job(backlog.pop(0)))


def main():
    pool.on_free = refill
    pool.submit(job("a"))
    pool.submit(job("b"))
    done.wait(5)
    pool.join(5)
    print(json.dumps({"order": order, "calls": calls, "slots": pool._slots}))

pool.run(main)
"""

CONSUMER_PROBE = """
import json, os, warnings
warnings.filterwarnings("ignore")
from celeriac.pools import get_pool

pool_class = get_pool("gevent")
pool_class.prepare_process()
import gevent
from celeriac import Celeriac
from celeriac.worker.consumer import Consumer
from celeriac.worker.spec import WorkerSpec
from celeriac.worker.status import StatusReader, StatusWriter

app = Celeriac("refill", broker="memory://", backend="memory://")


@app.task(name="nap")
def nap(n):
    gevent.sleep(0.1)
    return n


read_fd, write_fd = os.pipe()
writer, reader = StatusWriter(write_fd), StatusReader(read_fd)
spec = WorkerSpec(app="refill", pool="gevent", concurrency=3, queues=["celery"], prefetch=9,
                  consumer_id="refill/0", node="refill", index=0, status_fd=write_fd,
                  parent_pid=os.getppid())
pool = pool_class(3, app.conf)
pool.start()
consumer = Consumer(app, pool, spec, writer)
loop_greenlet = []
dispatched = {"loop": 0, "refill": 0}
dispatch = consumer._dispatch


def counted():
    submitted = dispatch()
    where = "loop" if gevent.getcurrent() is loop_greenlet[0] else "refill"
    dispatched[where] += submitted
    return submitted


consumer._dispatch = counted
settle = consumer.settler.settle


def slow_settle(batch):
    gevent.sleep(0.25)
    settle(batch)


consumer.settler.settle = slow_settle
results = [nap.delay(n) for n in range(9)]


def main():
    loop_greenlet.append(gevent.getcurrent())
    watcher = gevent.spawn(lambda: [r.get(timeout=10) for r in results])
    gevent.spawn(lambda: (watcher.join(), consumer.stop("done")))
    consumer.run()
    print(json.dumps({"values": watcher.value, "dispatched": dispatched}))

pool.run(main)
"""


def _probe(code: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    facts: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return facts


def test_on_free_is_called_once_for_the_jobs_that_ended_in_one_turn_of_the_hub() -> None:
    facts = _probe(POOL_PROBE)
    order = [(kind, name) for kind, name, _ in facts["order"]]
    assert order == [("start", "a"), ("start", "b"), ("end", "a"), ("end", "b"),
                     ("start", "c"), ("start", "d"), ("end", "c"), ("end", "d")]
    slot_of = {name: slot for kind, name, slot in facts["order"] if kind == "start"}
    assert {slot_of["c"], slot_of["d"]} == {slot_of["a"], slot_of["b"]}, "slots reused"
    assert facts["slots"] <= 2, "no greenlet beyond the two slots"
    # a and b ended in one turn: one call, both slots free; then one for c and d. Never
    # in a slot: in a greenlet of its own.
    assert [free for _, free in facts["calls"]] == [2, 2]
    assert not {greenlet for greenlet, _ in facts["calls"]} & set(slot_of.values())


def test_freed_slots_get_their_next_messages_while_the_loop_waits_on_the_broker() -> None:
    facts = _probe(CONSUMER_PROBE)
    assert facts["values"] == list(range(9))
    # Waves of 3 naps of 0.1 s; the loop's first settle takes 0.25 s (a slow backend).
    # The loop starts the first wave, and the second as it wakes; the third wave's
    # slots free while the loop still waits in that settle, and the refill starts it.
    assert facts["dispatched"] == {"loop": 6, "refill": 3}
