"""Prometheus ``/metrics`` read from the metric rollups, through the dashboard's real Flask
app on a real SQLite broker: the settled minute's counts per task (gauges), runtime
quantiles from the merged histograms of five minutes, stalls, the oldest message's age,
and values printed in full. (The token: tests/test_dashboard_auth.py.)"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("flask")

from dashboard_apps import sqlite_app

from celeriac import Celeriac
from celeriac.brokers.metrics import BUCKETS, EMPTY_HIST, MetricRow, bounds, bucket
from celeriac.dashboard import create_app
from celeriac.dashboard.metrics import SETTLE_SECONDS, settled_minute

TOKEN = {"Authorization": "Bearer scrape-me"}
FAST, SLOW = 0.01, 2.0


@pytest.fixture
def celeriac_app(tmp_path: Path) -> Iterator[Celeriac]:
    app = sqlite_app(tmp_path, "prom", dashboard_metrics_token="scrape-me")
    yield app
    app.close()


def _hist(**counts: int) -> tuple[int, ...]:
    hist = [0] * BUCKETS
    for runtime, count in ((FAST, counts.get("fast", 0)), (SLOW, counts.get("slow", 0))):
        hist[bucket(runtime)] += count
    return tuple(hist)


def _scrape(app: Celeriac) -> tuple[str, dict[str, float]]:
    response = create_app(app).test_client().get("/metrics", headers=TOKEN)
    assert response.status_code == 200
    text = response.data.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return text, samples


def test_the_settled_minute_is_one_that_ended_at_least_a_few_seconds_ago() -> None:
    # The minute from 999_960 has just ended: not settled yet; the one before it is.
    assert settled_minute(1_000_020.0) == 999_900
    assert settled_minute(999_960.0 + SETTLE_SECONDS) == 999_900
    assert settled_minute(999_960.0 + SETTLE_SECONDS - 1) == 999_840
    assert settled_minute(1_000_019.0 + SETTLE_SECONDS) == 999_900


def test_throughput_gauges_and_runtime_quantiles_per_task(celeriac_app: Celeriac) -> None:
    start = settled_minute(time.time())
    rows = []
    for back in range(-2, 8):  # the minutes around the window, each with its own counts
        minute = start - back * 60
        rows.append(MetricRow(minute, "shop.charge", processed=100 + back, failed=back + 2,
                              retried=1, runtime_hist=_hist(fast=90, slow=10), stalls=back % 2))
        rows.append(MetricRow(minute, 'odd "name"\\', processed=1, runtime_hist=_hist(slow=1)))
    rows.append(MetricRow(start - 2 * 60, "shop.rare", processed=4, runtime_hist=_hist(fast=4)))
    celeriac_app.broker.record_metrics(rows)
    text, samples = _scrape(celeriac_app)
    reported = int(samples["celeriac_task_metrics_minute_start_seconds"])
    back = (start - reported) // 60  # a minute may have passed between the two reads
    assert back in (-1, 0)
    assert "# TYPE celeriac_task_processed_last_minute gauge" in text
    assert samples['celeriac_task_processed_last_minute{task="shop.charge"}'] == 100 + back
    assert samples['celeriac_task_failed_last_minute{task="shop.charge"}'] == back + 2
    assert samples['celeriac_task_retried_last_minute{task="shop.charge"}'] == 1
    assert samples['celeriac_task_stalls_last_minute{task="shop.charge"}'] == back % 2
    # A task of the five minutes that finished nothing in the last one: a zero, not absent.
    assert samples['celeriac_task_processed_last_minute{task="shop.rare"}'] == 0
    assert samples['celeriac_task_processed_last_minute{task="odd \\"name\\"\\\\"}'] == 1
    # Quantiles from the five minutes' merged histograms: 450 fast runs and 50 slow ones.
    assert samples['celeriac_task_runs_last_5m{task="shop.charge"}'] == 500
    fast_low, fast_high = bounds(bucket(FAST))
    slow_low, slow_high = bounds(bucket(SLOW))
    p50 = samples['celeriac_task_runtime_last_5m_seconds{task="shop.charge",quantile="0.5"}']
    p99 = samples['celeriac_task_runtime_last_5m_seconds{task="shop.charge",quantile="0.99"}']
    p95 = samples['celeriac_task_runtime_last_5m_seconds{task="shop.charge",quantile="0.95"}']
    assert fast_low <= p50 < fast_high
    assert slow_low <= p95 < slow_high and slow_low <= p99 < slow_high
    assert samples['celeriac_task_runs_last_5m{task="shop.rare"}'] == 4
    assert not re.search(r"e\+\d", text)  # values in full, never 1.23457e+06


def test_no_rows_no_task_samples(celeriac_app: Celeriac) -> None:
    celeriac_app.broker.record_metrics([MetricRow(settled_minute(time.time()) - 3600, "old",
                                                  processed=1, runtime_hist=EMPTY_HIST)])
    text, samples = _scrape(celeriac_app)
    assert "# TYPE celeriac_task_runtime_last_5m_seconds gauge" in text
    assert not [name for name in samples if name.startswith("celeriac_task_") and "{" in name]


def test_large_values_and_the_oldest_message(celeriac_app: Celeriac) -> None:
    celeriac_app.broker.heartbeat("node-1@host", {"processed": 1_234_567, "concurrency": 4,
                                                  "running": 0}, ttl=30)
    celeriac_app.send_task("anything", queue="waiting")
    text, samples = _scrape(celeriac_app)
    assert 'celeriac_worker_processed_total{worker="node-1@host"} 1234567\n' in text
    assert samples['celeriac_queue_oldest_age_seconds{queue="waiting"}'] >= 0
