"""celeriac.worker.heap: the collector of a worker process, set before the first task.

The collector is process-wide, so each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from celeriac.worker.heap import PER_SLOT, YOUNG_THRESHOLD


def collector_after(before: str, settle: str = "heap.settle()") -> dict[str, object]:
    """Run ``before`` then ``settle`` in a new interpreter; the collector's state after
    (and ``EXTRA``, if ``settle`` sets it)."""
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
        """) + textwrap.dedent(settle) + textwrap.dedent("""
        print(json.dumps({"enabled": gc.isenabled(), "threshold": gc.get_threshold(),
                          "before": BEFORE,
                          "frozen": gc.get_freeze_count(), "cycle_collected": bool(GONE),
                          "extra": globals().get("EXTRA")}))
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


def test_the_young_threshold_grows_with_the_concurrency() -> None:
    """A full pool holds tens of objects per task in flight: below that, every wave of
    starts set off young collections walking the new (live) tasks' objects."""
    assert PER_SLOT * 1000 > YOUNG_THRESHOLD
    state = collector_after("", "heap.settle(1000)")
    assert state["threshold"] == [PER_SLOT * 1000, *state["before"][1:]]  # type: ignore[index]
    small = collector_after("", "heap.settle(8)")
    assert small["threshold"] == [YOUNG_THRESHOLD, *small["before"][1:]]  # type: ignore[index]


def test_a_resize_moves_the_threshold_it_set_and_no_other() -> None:
    state = collector_after("", """
        heap.settle(10)
        heap.resize(1000)
        GREW = gc.get_threshold()[0]
        heap.resize(20)
        SHRANK = gc.get_threshold()[0]
        gc.set_threshold(12345)  # a receiver or the app sets its own after the start
        heap.resize(2000)
        EXTRA = [GREW, SHRANK, gc.get_threshold()[0]]
        """)
    assert state["extra"] == [PER_SLOT * 1000, YOUNG_THRESHOLD, 12345]
    app_set = collector_after("gc.set_threshold(500000, 5, 7)", """
        heap.settle(10)
        heap.resize(1000)
        """)
    assert app_set["threshold"] == [500000, 5, 7]
