"""The Overview page and its chart's data (``/overview/series``) through the dashboard's
real Flask app on a real SQLite broker: the ranges and their periods, zeros where nothing
was recorded, totals, a viewer reading them, an unknown range refused, and the figures
(queue depths, oldest message, workers, busy slots, error rate). The chart drawn in
chromium: tests/browser/test_overview.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")

from dashboard_apps import cheap_hash, logged_in, sqlite_app

from celeriac import Celeriac
from celeriac.brokers.metrics import MetricRow
from celeriac.dashboard import create_app
from celeriac.dashboard.data import DashboardData
from celeriac.dashboard.overview import RECENT_MINUTES, figures, percent, series

VIEWER = "viewer of the overview"


@pytest.fixture
def celeriac_app(tmp_path: Path) -> Iterator[Celeriac]:
    app = sqlite_app(tmp_path, "overview", dashboard_viewer_password_hash=cheap_hash(VIEWER))
    yield app
    app.close()


@pytest.fixture
def viewer(celeriac_app: Celeriac) -> Any:
    client = logged_in(celeriac_app, VIEWER)
    assert client.login_response.headers["Location"] == "/"  # the Overview is the home page
    return client


def _minute(at: float) -> int:
    return int(at) // 60 * 60


def test_the_last_hour_is_sixty_minutes_with_zeros_where_nothing_ran(celeriac_app: Celeriac
                                                                      ) -> None:
    now = time.time()
    five_ago, ten_ago = _minute(now) - 300, _minute(now) - 600
    celeriac_app.broker.record_metrics([
        MetricRow(five_ago, "add", processed=120, failed=30),
        MetricRow(five_ago, "other", processed=60),
        MetricRow(ten_ago, "add", processed=6, failed=6),
        MetricRow(_minute(now) - 7200, "add", processed=999),  # two hours ago: not shown
    ])
    chart = series(DashboardData(celeriac_app), "1h", now)
    assert chart.step == 60
    assert len(chart.times) == 60
    assert chart.times[-1] == _minute(now)
    assert all(b - a == 60 for a, b in zip(chart.times, chart.times[1:], strict=False))
    at = {start: (p, f) for start, p, f in zip(chart.times, chart.processed, chart.failed,
                                               strict=True)}
    assert at[five_ago] == (3.0, 0.5)  # 180 and 30 in a minute, per second
    assert at[ten_ago] == (0.1, 0.1)
    empty = [start for start in chart.times if start not in (five_ago, ten_ago)]
    assert len(empty) == 58 and all(at[start] == (0.0, 0.0) for start in empty)
    assert (chart.total_processed, chart.total_failed) == (186, 36)


def test_the_newest_point_is_the_rate_so_far_in_its_period(celeriac_app: Celeriac) -> None:
    now = float(_minute(time.time()) + 20)  # 20 s into the current minute
    celeriac_app.broker.record_metrics([MetricRow(_minute(now), "add", processed=10)])
    chart = series(DashboardData(celeriac_app), "1h", now)
    assert chart.processed[-1] == 0.5  # 10 runs in the 20 s that have passed


@pytest.mark.parametrize(("name", "points"), [("24h", 24), ("72h", 72)])
def test_the_long_ranges_read_the_hourly_rows(celeriac_app: Celeriac, name: str,
                                              points: int) -> None:
    now = time.time()
    hour = int(now) // 3600 * 3600
    celeriac_app.broker.record_metrics([
        MetricRow(hour - 3 * 3600 + 60, "add", processed=3600, failed=360),
        MetricRow(hour - 3 * 3600 + 120, "add", processed=3600),
    ])
    chart = series(DashboardData(celeriac_app), name, now)
    assert (chart.step, len(chart.times), chart.times[-1]) == (3600, points, hour)
    index = chart.times.index(hour - 3 * 3600)
    assert (chart.processed[index], chart.failed[index]) == (2.0, 0.1)
    assert sum(chart.processed) == 2.0 and sum(chart.failed) == 0.1  # the rest are zeros
    assert (chart.total_processed, chart.total_failed) == (7200, 360)


def test_a_viewer_reads_the_series_as_json(celeriac_app: Celeriac, viewer: Any) -> None:
    celeriac_app.broker.record_metrics([MetricRow(_minute(time.time()) - 120, "add",
                                                  processed=60, failed=15)])
    for name, step, points in (("1h", 60, 60), ("24h", 3600, 24), ("72h", 3600, 72)):
        response = viewer.get(f"/overview/series?range={name}")
        assert response.status_code == 200 and response.mimetype == "application/json"
        data = response.get_json()
        assert (data["range"], data["step"]) == (name, step)
        assert len(data["times"]) == len(data["processed"]) == len(data["failed"]) == points
        assert None not in data["processed"] and None not in data["failed"]
        assert data["total"] == {"processed": 60, "failed": 15, "error_rate": 0.25}
    assert viewer.get("/overview/series").get_json()["range"] == "1h"  # the default


def test_an_unknown_range_is_refused(viewer: Any) -> None:
    for bad in ("2h", "", "1h<script>"):
        response = viewer.get(f"/overview/series?range={bad}")
        assert response.status_code == 400
        assert "one of 1h, 24h, 72h" in response.get_json()["error"]


def test_the_series_needs_a_session(celeriac_app: Celeriac) -> None:
    client = create_app(celeriac_app).test_client()
    response = client.get("/overview/series?range=1h")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_the_figures(celeriac_app: Celeriac, viewer: Any) -> None:
    broker = celeriac_app.broker
    for n in range(3):
        celeriac_app.tasks["add"].apply_async((n, n), queue="orders")
    celeriac_app.tasks["add"].apply_async((1, 1), queue="orders", countdown=600)
    broker.heartbeat("node-1@host", {"queues": ["celery", "idle"], "running": 3,
                                     "concurrency": 8}, ttl=30)
    broker.heartbeat("node-2@host", {"queues": ["celery"], "running": 1, "concurrency": 4},
                     ttl=30)
    now = time.time()
    broker.record_metrics([
        MetricRow(_minute(now) - 60, "add", processed=30, failed=3),
        MetricRow(_minute(now) - (RECENT_MINUTES + 2) * 60, "add", processed=500, failed=500),
    ])
    view = figures(DashboardData(celeriac_app), now)
    assert (view.workers, view.busy_slots, view.slots) == (2, 4, 12)
    assert (view.processed, view.failed, view.error_rate) == (30, 3, 0.1)
    depths = {q.name: (q.depth, q.stats.ready, q.stats.scheduled) for q in view.queues}
    assert depths == {"orders": (4, 3, 1), "celery": (0, 0, 0), "idle": (0, 0, 0)}
    assert view.oldest_age is not None and view.oldest_age >= 0
    html = viewer.get("/").data.decode()
    assert 'data-figure="workers">2<' in html
    assert 'data-figure="busy">4 <small>of 12</small>' in html
    assert 'data-figure="failed">3<' in html
    assert 'data-figure="error-rate">10.0%<' in html
    assert '<tr data-queue="orders">' in html and 'data-count="depth">4<' in html
    assert 'id="chart" data-series="/overview/series" data-range="1h"' in html
    assert 'aria-current="page">Overview<' in html
    fragment = viewer.get("/?fragment=1").data.decode()
    assert fragment.startswith('<div id="figures"') and "<html" not in fragment
    assert 'data-range="72h"' in viewer.get("/?range=72h").data.decode()


def test_nothing_recorded_yet(viewer: Any) -> None:
    html = viewer.get("/").data.decode()
    assert 'data-figure="workers">0<' in html
    assert 'data-figure="error-rate">-<' in html
    assert "No queue has had a message yet." in html
    data = viewer.get("/overview/series?range=1h").get_json()
    assert set(data["processed"]) == {0.0} and data["total"]["error_rate"] is None


def test_percentages_round_halves_up_as_the_charts_script_does() -> None:
    assert [percent(r) for r in (None, 0.0, 1 / 16, 1 / 3, 1.0)] == [
        "-", "0.0%", "6.3%", "33.3%", "100.0%"]
