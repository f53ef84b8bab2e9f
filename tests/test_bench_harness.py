"""The pure parts of ``bench/harness`` (``./scripts/bench``): how a trace becomes "full
speed", how a target is judged, how sizes scale and systems are chosen. The command itself
runs end to end in ``tests/e2e/test_bench_quick.py``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def harness() -> Iterator[ModuleType]:
    """``bench/harness`` imported as a package (bench/ on the path only meanwhile)."""
    sys.path.insert(0, str(BENCH))
    try:
        import harness.__main__
        import harness.systems
        import harness.targets
        import harness.workloads

        yield harness
    finally:
        sys.path.remove(str(BENCH))


def test_full_speed_is_the_first_window_at_80_percent_of_the_second_half(harness: ModuleType) -> None:
    # 1 s at 100 tasks/s, then 1,000 tasks/s: the first 100 ms window that reaches 800/s
    # starts 20 ms before the change (it ends 80 ms into the fast stretch)
    trace = [(t / 100, t) for t in range(1, 101)]
    trace += [(1 + t / 1000, 100 + t) for t in range(1, 3001)]
    assert harness.workloads.full_speed(trace) == pytest.approx(0.97, abs=0.011)
    steady = [(t / 1000, t) for t in range(1, 2001)]
    assert harness.workloads.full_speed(steady) == 0.0


def test_targets_say_met_not_met_or_not_measured(harness: ModuleType) -> None:
    targets = harness.targets
    ceiling = harness.workloads.CEILING
    noop = next(t for t in targets.TARGETS if t.workload == "noop")
    assert targets.verdict(noop, {}) == ("-", "not measured")
    medians = {"noop": {ceiling: {"tasks/s": 10_000.0}, "celeriac-gevent": {"tasks/s": 8_500.0}}}
    assert targets.verdict(noop, medians) == ("0.85 x ceiling", "met")
    medians["noop"]["celeriac-gevent"]["tasks/s"] = 4_800.0
    assert targets.verdict(noop, medians) == ("0.48 x ceiling", "NOT met")
    depth = [t for t in targets.TARGETS if t.workload == "depth"]
    figures = {"enqueue/s @10,000": 10_000.0, "enqueue/s @1,000,000": 8_000.0,
               "drain/s @10,000": 5_000.0, "drain/s @1,000,000": 4_700.0}
    verdicts = [targets.verdict(t, {"depth": {"celeriac-gevent": figures}}) for t in depth]
    assert verdicts == [("0.80 x", "NOT met"), ("0.94 x", "met")]


def test_scale_and_systems(harness: ModuleType) -> None:
    main, systems = harness.__main__, harness.systems
    sizes = main.scaled(harness.context.Sizes(), 0.001)
    assert (sizes.feeds, sizes.noop, sizes.depth_large) == (20, 40, 1_000)
    assert sizes.feed_concurrency == 1_000 and sizes.feed_latency == 0.5
    assert [s.name for s in systems.parse(None, quick=True)] == systems.QUICK
    chosen = systems.parse("rq,celeriac-gevent", quick=False)
    assert [s.name for s in chosen] == ["celeriac-gevent", "rq"]  # table order
    assert not chosen[1].applies("feeds") and chosen[1].applies("noop")
    with pytest.raises(SystemExit, match="unknown systems nope"):
        systems.parse("nope", quick=False)


def test_every_workload_says_what_bounds_it(harness: ModuleType) -> None:
    import harness.bounds

    assert set(harness.bounds.BOUNDS) == set(harness.workloads.WORKLOADS)
    assert all(len(text) > 100 for text in harness.bounds.BOUNDS.values())


def test_the_published_report_says_what_bounds_it_in_the_harness_words(harness: ModuleType) -> None:
    """docs/benchmarks.md is written by the harness; a bound text edited by hand in one place
    (or pasted twice) drifts from ``bounds.py``, which writes the next report."""
    import harness.bounds

    report = (BENCH.parent / "docs" / "benchmarks.md").read_text()
    for name, workload in harness.workloads.WORKLOADS.items():
        section = report.split(f"\n## {workload.title}\n", 1)[1].split("\n## ", 1)[0]
        assert section.count("**What bounds it.**") == 1, name
        said = section.split("**What bounds it.** ", 1)[1].split("\n\n![", 1)[0].rstrip("\n")
        assert said == harness.bounds.BOUNDS[name], name
