"""The gevent pool's slots: greenlets that run jobs one after another, as a thread pool's
threads do, instead of a greenlet per job (``GeventPool.submit``); and how freed slots
get their next messages at the hub's next turn (``Pool.on_free``, ``Consumer._refill``),
not when the consumer's loop next runs.

The loop is one greenlet among the slots, and it spends most of its turns in broker
round trips (settling, fetching): when a wave of tasks ended together, each freed slot
waited for the loop's round trips, and each wave started later and more spread out than
the one before (``bench/asyncio_compare.py``'s sleep workload).

Patching is process-wide, so the pool runs in a subprocess of its own, as in a worker
process: prepared (patched), started, the consumer's place taken by ``main``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import contextvars, json, sys, warnings
warnings.filterwarnings("ignore")
from celeriac.pools import get_pool

pool_class = get_pool("gevent")
pool_class.prepare_process()
import gevent
pool = pool_class(3)
pool.start()
facts = {}
var = contextvars.ContextVar("var", default="unset")


class Stop(Exception):
    pass


def main():
    # Jobs one at a time: every one runs on the same slot, each in a fresh context.
    slots, seen = set(), []
    def job(n):
        slots.add(id(gevent.getcurrent()))
        seen.append(var.get())
        var.set(n)
    for n in range(5):
        pool.submit(lambda n=n: job(n))
        pool.join(5)
    facts["slots_for_one_at_a_time"] = len(slots)
    facts["context_seen"] = seen

    # An idle slot keeps nothing of its last job (at -c 1000, a thousand messages and runs).
    import gc, weakref
    class Job:
        def __call__(self):
            pass
    last = Job()
    last_ref = weakref.ref(last)
    pool.submit(last)
    del last
    pool.join(5)
    gc.collect()
    facts["last_job_kept"] = last_ref() is not None

    # Still one slot. An interrupt names a job: one sent for a job that has ended does not reach the
    # next job its slot took; one sent for a running job ends it.
    handles, outcomes = {}, []
    def first():
        handles["first"] = pool.current_job()
    def second():
        handles["second"] = pool.current_job()
        try:
            gevent.sleep(0.3)
            outcomes.append("second finished")
        except Stop:
            outcomes.append("second stopped")
    pool.submit(first)
    pool.join(5)
    pool.submit(second)
    gevent.sleep(0.05)
    pool.interrupt(handles["first"], Stop)
    gevent.sleep(0.05)
    facts["same_slot"] = handles["first"][0] is handles["second"][0]
    facts["after_stale_interrupt"] = list(outcomes)
    pool.interrupt(handles["second"], Stop)
    pool.join(5)
    facts["outcomes"] = outcomes

    # Six at once on three slots: as many greenlets as jobs at once, never more.
    slots.clear()
    peak = [0]
    def busy():
        slots.add(id(gevent.getcurrent()))
        peak[0] = max(peak[0], pool.running())
        gevent.sleep(0.05)
    for _ in range(2):
        for _ in range(pool.free_slots()):
            pool.submit(busy)
        pool.join(5)
    facts["slots_for_two_waves"] = len(slots)
    facts["peak_running"] = peak[0]

    # A job that raises does not take its slot with it; running() comes back to 0.
    ran = []
    pool.submit(lambda: 1 / 0)
    pool.submit(lambda: ran.append("after"))
    facts["joined_after_error"] = pool.join(5)
    facts["ran_after_error"] = ran
    facts["running_after"] = pool.running()

    # Shrunk, the pool retires slots it no longer needs.
    pool.resize(1)
    for _ in range(3):
        pool.submit(lambda: gevent.sleep(0.01))
    pool.join(5)
    gevent.sleep(0.05)
    facts["slots_after_shrink"] = pool._slots
    print(json.dumps(facts))

pool.run(main)
"""


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
dispatched = {"loop": 0, "refill": 0, "refill while the loop settles": 0}
settling = []
dispatch = consumer._dispatch


def counted():
    submitted = dispatch()
    if gevent.getcurrent() is loop_greenlet[0]:
        dispatched["loop"] += submitted
    else:
        dispatched["refill"] += submitted
        if settling:
            dispatched["refill while the loop settles"] += submitted
    return submitted


consumer._dispatch = counted
settle = consumer.settler.settle


def slow_settle(batch):
    settling.append(1)
    gevent.sleep(0.25)
    settling.pop()
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


def test_the_gevent_pool_runs_jobs_on_reused_slots_with_a_fresh_context_each() -> None:
    facts = _probe(PROBE)
    assert facts["slots_for_one_at_a_time"] == 1
    assert facts["last_job_kept"] is False, "an idle slot keeps its last job alive"
    assert facts["context_seen"] == ["unset"] * 5, "a task's context vars do not leak"
    assert facts["slots_for_two_waves"] == 3 and facts["peak_running"] == 3
    assert facts["joined_after_error"] is True and facts["ran_after_error"] == ["after"]
    assert facts["running_after"] == 0
    assert facts["same_slot"] is True
    assert facts["after_stale_interrupt"] == [], "the second job still runs"
    assert facts["outcomes"] == ["second stopped"], "the stale interrupt missed, the live one hit"
    assert facts["slots_after_shrink"] <= 2


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
    # Waves of 3 naps of 0.1 s; each settle takes 0.25 s (a slow backend). The loop
    # starts the first wave; the slots of a later wave free while the loop waits in a
    # settle, and the refill hands them their messages then. (Who starts the second
    # wave, the loop waking or the refill, depends on which the hub runs first.)
    dispatched = facts["dispatched"]
    assert dispatched["loop"] + dispatched["refill"] == 9
    assert dispatched["loop"] >= 3
    assert dispatched["refill while the loop settles"] >= 3
