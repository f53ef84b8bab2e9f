"""The metric row, its runtime histogram and percentiles (celeriac.brokers.metrics)."""

from __future__ import annotations

import math
import random

import pytest

from celeriac.brokers.metrics import (
    ALL_TASKS,
    BUCKETS,
    FIRST_BOUND,
    MetricRow,
    bounds,
    bucket,
    combine,
    decode,
    encode,
    percentile,
    span,
    stored_rows,
    with_totals,
)

#: A bucket is 2^(1/3) wider than the one before: no estimate is off by more.
WIDTH = 2 ** (1 / 3)


def hist_of(runtimes: list[float]) -> tuple[int, ...]:
    counts = [0] * BUCKETS
    for runtime in runtimes:
        counts[bucket(runtime)] += 1
    return tuple(counts)


def exact(runtimes: list[float], p: float) -> float:
    ordered = sorted(runtimes)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def test_every_runtime_falls_within_its_buckets_bounds() -> None:
    for runtime in [0.0, 5e-5, FIRST_BOUND, 1.5e-4, 0.001, 0.0123, 0.5, 1.0, 3.7, 60.0, 3600.0,
                    86_400.0, 250_000.0, 1e9]:
        lower, upper = bounds(bucket(runtime))
        assert lower <= runtime < upper, runtime
    assert bucket(0.0) == 0 and bucket(1e12) == BUCKETS - 1
    # Buckets tile the line: each starts where the one before ends.
    for index in range(1, BUCKETS):
        assert bounds(index)[0] == pytest.approx(bounds(index - 1)[1])
    # The last bounded bucket reaches three days.
    assert bounds(BUCKETS - 1)[0] > 72 * 3600


@pytest.mark.parametrize("spread", ["uniform", "lognormal", "bimodal"])
def test_percentiles_are_within_a_buckets_width_of_the_truth(spread: str) -> None:
    rng = random.Random(spread)
    if spread == "uniform":
        runtimes = [rng.uniform(0.001, 2.0) for _ in range(5000)]
    elif spread == "lognormal":
        runtimes = [rng.lognormvariate(math.log(0.05), 1.5) for _ in range(5000)]
    else:
        runtimes = [rng.uniform(0.002, 0.003) if rng.random() < 0.9 else rng.uniform(5, 6)
                    for _ in range(5000)]
    hist = hist_of(runtimes)
    for p in (1, 25, 50, 75, 90, 95, 99, 99.9, 100):
        estimate = percentile(hist, p)
        truth = exact(runtimes, p)
        assert estimate is not None
        assert truth / WIDTH <= estimate <= truth * WIDTH, (p, estimate, truth)


def test_percentiles_of_nothing_and_of_one_run() -> None:
    assert percentile((0,) * BUCKETS, 50) is None
    one = hist_of([0.25])
    lower, upper = bounds(bucket(0.25))
    for p in (0, 50, 100):
        value = percentile(one, p)
        assert value is not None and lower <= value <= upper
    fast = percentile(hist_of([0.0, 0.0]), 100)
    assert fast is not None and fast <= FIRST_BOUND
    slow = hist_of([1e9])
    assert percentile(slow, 99) == bounds(BUCKETS - 1)[0]


def test_rows_merge_by_adding_and_percentiles_come_from_the_sum() -> None:
    a = MetricRow(60, "t", processed=3, failed=1, retried=1, runtime_hist=hist_of([0.01] * 4),
                  stalls=2)
    b = MetricRow(60, "t", processed=1, runtime_hist=hist_of([10.0]), stalls=1)
    both = a.merged(b)
    assert (both.processed, both.failed, both.retried, both.stalls, both.runs) == (4, 1, 1, 3, 5)
    p50, p99 = both.percentiles(50, 99)
    assert p50 is not None and p99 is not None
    assert p50 < 0.02 < 5 < p99
    assert combine([a, b], minute=0, task="all") == MetricRow(
        0, "all", 4, 1, 1, both.runtime_hist, 3)


def test_the_stored_text_form_round_trips() -> None:
    row = MetricRow(120, "proj.tasks.add", processed=7, failed=2, retried=3,
                    runtime_hist=hist_of([0.001, 0.001, 0.5, 1e9]), stalls=4)
    text = encode(row)
    assert text.startswith("7,2,3,4|")
    assert decode(120, "proj.tasks.add", text) == row
    assert decode(0, "x", "0,0,0,0|") == MetricRow(0, "x")


def test_with_totals_merges_equal_keys_and_adds_a_total_per_minute() -> None:
    rows = [MetricRow(61, "a", processed=1), MetricRow(119, "a", failed=1),
            MetricRow(120, "b", processed=2), MetricRow(60, "x" * 500, processed=1)]
    stored = with_totals(rows)
    by_key = {(r.minute, r.task): r for r in stored}
    assert by_key[(60, "a")].processed == 1 and by_key[(60, "a")].failed == 1
    assert (60, "x" * 200) in by_key  # long names are cut
    assert by_key[(60, ALL_TASKS)].processed == 2
    assert by_key[(120, ALL_TASKS)].processed == 2
    assert len(stored) == 5


def test_stored_rows_are_each_minutes_and_each_hours() -> None:
    rows = [MetricRow(3540, "a", processed=1), MetricRow(3600, "a", processed=2),
            MetricRow(3660, "b", failed=1)]
    stored = {(step, r.minute, r.task): r.processed + r.failed for step, r in stored_rows(rows)}
    assert stored == {
        (60, 3540, "a"): 1, (60, 3600, "a"): 2, (60, 3660, "b"): 1,
        (60, 3540, ALL_TASKS): 1, (60, 3600, ALL_TASKS): 2, (60, 3660, ALL_TASKS): 1,
        (3600, 0, "a"): 1, (3600, 3600, "a"): 2, (3600, 3600, "b"): 1,
        (3600, 0, ALL_TASKS): 1, (3600, 3600, ALL_TASKS): 3}


def test_a_read_never_reaches_past_the_retention() -> None:
    minutes = span(0, 10_000, now=10_000, retention=600)
    assert minutes[0] == 9360 and minutes[-1] == 9960
    assert list(span(9_990, 9_995, now=10_000, retention=600)) == [9960]
    assert list(span(0, 10_000, now=10_000, retention=7200, step=3600)) == [0, 3600, 7200]
    with pytest.raises(ValueError, match="per hour"):
        span(0, 1, now=1, retention=1, step=120)
