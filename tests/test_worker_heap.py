"""celeriac.worker.heap: the collector of a worker process, set before the first task.

The collector is process-wide, so each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from celeriac.worker.heap import YOUNG_THRESHOLD


def collector_after(before: str) -> dict[str, object]:
    """Run ``before`` then ``settle()`` in a new interpreter; the collector's state after."""
    code = textwrap.dedent("""
        import gc, json, weakref
        class Node:
            pass
        GONE = []
        def garbage_cycle():
            a, b = Node(), Node()
            a.other, b.other = b, a
            return weakref.ref(a, lambda ref: GONE.append(1))
        """) + textwrap.dedent(before) + textwrap.dedent("""
        cycle = garbage_cycle()
        BEFORE = list(gc.get_threshold())
        from celeriac.worker import heap
        heap.settle()
        print(json.dumps({"enabled": gc.isenabled(), "threshold": gc.get_threshold(),
                          "before": BEFORE,
                          "frozen": gc.get_freeze_count(), "cycle_collected": bool(GONE)}))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    state: dict[str, object] = json.loads(out)
    return state


def test_default_collector_is_frozen_and_its_young_threshold_raised() -> None:
    state = collector_after("")
    assert state["enabled"] is True
    before = state["before"]
    assert isinstance(before, list) and before[0] < YOUNG_THRESHOLD
    assert state["threshold"] == [YOUNG_THRESHOLD, *before[1:]]  # the older ones as they were
    assert isinstance(state["frozen"], int) and state["frozen"] > 1000
    # Garbage made before settle() is collected first, not frozen for the process's life.
    assert state["cycle_collected"] is True


def test_a_threshold_the_app_raised_further_is_kept() -> None:
    state = collector_after("gc.set_threshold(20000, 5, 7)")
    assert state["threshold"] == [20000, 5, 7]
    assert isinstance(state["frozen"], int) and state["frozen"] > 1000


def test_a_disabled_collector_stays_disabled() -> None:
    state = collector_after("gc.disable()")
    assert state["enabled"] is False
    assert state["threshold"] == state["before"]  # Python's own, whatever the version
    assert state["cycle_collected"] is True  # the one collection still runs
