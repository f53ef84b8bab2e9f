"""``Pool.start_service``: work beside the consumer's loop, on every pool.

A green pool's service must be a greenlet of the hub's own thread (its sockets belong
to that hub), also when ``GEVENT_PATCHTHREAD=N`` leaves threads native; the other pools
run it on a thread of its own. Each pool runs in a fresh interpreter, patched first as
a worker process is: the service waits for an event the caller sets, and the caller's
``join`` sees it end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from celeriac.pools import POOLS

REPO_ROOT = Path(__file__).resolve().parents[1]

CODE = """
import _thread, json, sys
native = _thread.get_ident  # the OS thread's id, whatever patching does next
from celeriac.pools import get_pool
pool_class = get_pool(sys.argv[1])
pool_class.prepare_process()
pool = pool_class(2)
event = pool.event()
ran = []

def service():
    if event.wait(10):
        ran.append(native())

join = pool.start_service(service, "test-service")
event.set()
ended = join(10)
print(json.dumps({"ended": ended, "same_thread": ran == [native()], "ran": len(ran)}))
"""


def run_service(pool: str, **env: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CODE, pool], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_a_service_runs_beside_the_caller_and_its_join_sees_it_end(pool: str) -> None:
    pytest.importorskip({"gevent": "gevent", "eventlet": "eventlet"}.get(pool, "json"))
    result = run_service(pool)
    assert result["ended"] is True and result["ran"] == 1
    # Green pools: a greenlet on the caller's own OS thread; the others: a thread.
    assert result["same_thread"] is (pool in ("gevent", "eventlet"))


def test_the_gevent_service_is_a_greenlet_even_when_threads_are_left_native() -> None:
    pytest.importorskip("gevent")
    result = run_service("gevent", GEVENT_PATCHTHREAD="N")
    assert result == {"ended": True, "same_thread": True, "ran": 1}
