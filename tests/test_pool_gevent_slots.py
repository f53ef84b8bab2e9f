"""The gevent pool's slots: greenlets that run jobs one after another, as a thread pool's
threads do, instead of a greenlet per job (``GeventPool.submit``).

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


def _probe() -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    facts: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return facts


def test_the_gevent_pool_runs_jobs_on_reused_slots_with_a_fresh_context_each() -> None:
    facts = _probe()
    assert facts["slots_for_one_at_a_time"] == 1
    assert facts["context_seen"] == ["unset"] * 5, "a task's context vars do not leak"
    assert facts["slots_for_two_waves"] == 3 and facts["peak_running"] == 3
    assert facts["joined_after_error"] is True and facts["ran_after_error"] == ["after"]
    assert facts["running_after"] == 0
    assert facts["same_slot"] is True
    assert facts["after_stale_interrupt"] == [], "the second job still runs"
    assert facts["outcomes"] == ["second stopped"], "the stale interrupt missed, the live one hit"
    assert facts["slots_after_shrink"] <= 2
