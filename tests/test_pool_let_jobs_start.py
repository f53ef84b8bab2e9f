"""``Pool.let_jobs_start``: after the consumer hands jobs to a green pool, they run up to
their first wait before the consumer goes on (to the broker, whose reply may already be
there: a read that finds data never yields, so the jobs would start a round trip later).

Patching is process-wide, so each pool runs in a subprocess of its own, as a worker
process would: prepared (patched), started, the consumer's place taken by ``main``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Prints, as JSON, what had run when ``let_jobs_start`` returned, in a pool of argv[1].
PROBE = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from celeriac.pools import get_pool

pool_class = get_pool(sys.argv[1])
pool_class.prepare_process()
pool = pool_class(4)
pool.start()
facts = {}

def main():
    ran = []
    for n in range(3):
        pool.submit(lambda n=n: ran.append(n))
    pool.let_jobs_start()
    facts["ran_before_the_consumer_went_on"] = sorted(ran)
    pool.join(5)
    facts["ran_in_the_end"] = sorted(ran)

pool.run(main)
pool.stop()
print(json.dumps(facts))
"""


def probe(pool: str) -> dict[str, list[int]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, pool], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    facts: dict[str, list[int]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return facts


@pytest.mark.parametrize("pool", ["gevent", "eventlet"])
def test_green_jobs_run_before_the_consumer_goes_on(pool: str) -> None:
    facts = probe(pool)
    assert facts["ran_before_the_consumer_went_on"] == [0, 1, 2]
    assert facts["ran_in_the_end"] == [0, 1, 2]


def test_jobs_on_other_threads_need_nothing() -> None:
    """On the threads pool the jobs run on their own threads: the hook returns at once
    and every job still runs."""
    facts = probe("threads")
    assert facts["ran_in_the_end"] == [0, 1, 2]
