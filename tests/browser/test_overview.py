"""The Overview page in a real browser, on SQLite and on Redis, with a real CLI worker
whose metric rollups reach the broker (``worker_send_metrics``, flushed every ~2 s) and a
real ``celeriac dashboard`` subprocess:

* the chart draws: uPlot's data holds the finished and failed per second that the worker
  recorded, its canvas has pixels of both lines, and the range tabs switch it to hourly;
* the figures: workers online, busy slots, finished, failed, error rate, and a queue's
  depth that changes without a reload.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Project, wait_until

from browser.stack import VIEWER_PASSWORD, Dashboard, login, serving, tasks_module

pytest.importorskip("flask")
from playwright.sync_api import expect

from celeriac.brokers.metrics import ALL_TASKS, combine

#: Whether the chart's canvas has pixels of a series' colour (its stroke: finished green,
#: failed red), looked for in the plot's own canvas.
PAINTED = """([r, g, b]) => {
  const canvas = document.querySelector("#chart canvas");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 0; i < pixels.length; i += 4) {
    if (Math.abs(pixels[i] - r) < 12 && Math.abs(pixels[i + 1] - g) < 12
        && Math.abs(pixels[i + 2] - b) < 12 && pixels[i + 3] > 200) { return true; }
  }
  return false;
}"""
FINISHED_RGB, FAILED_RGB = [59, 122, 74], [179, 38, 30]


@pytest.fixture
def stack(project_kind: Project) -> Iterator[tuple[Project, Dashboard]]:
    with serving(project_kind, "", "-P", "threads", "-c", "4", "--processes", "1") as dashboard:
        yield project_kind, dashboard


def _recorded(tasks: Any) -> tuple[int, int]:
    """Finished and failed runs of the last hour, as the broker's rollups hold them."""
    now = time.time()
    total = combine(tasks.app.broker.metrics(now - 3600, now, ALL_TASKS))
    return total.processed, total.failed


def test_the_overview_chart_draws(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    done = [tasks.add.delay(n, n) for n in range(6)]
    failed = [tasks.fail.delay(f"boom {n}") for n in range(3)]
    assert [r.get(timeout=30) for r in done] == [0, 2, 4, 6, 8, 10]
    wait_until(lambda: all(r.state == "FAILURE" for r in failed), message="the failures")
    wait_until(lambda: _recorded(tasks) == (9, 3), timeout=15, message="the rollups flushed")

    login(page, dashboard.url, VIEWER_PASSWORD)
    expect(page).to_have_url(f"{dashboard.url}/")
    expect(page.locator("header nav a.current")).to_have_text("Overview")
    expect(page.locator("#chart[data-drawn='1h']")).to_have_count(1)
    chart = page.evaluate("""() => {
      const data = window.celeriacChart.data;
      return {points: data[0].length, finished: Array.from(data[1]), failed: Array.from(data[2])};
    }""")
    assert chart["points"] == 60
    assert all(value is not None for value in chart["finished"] + chart["failed"])  # zeros
    assert max(chart["finished"]) > 0 and max(chart["failed"]) > 0
    # Per minute: the runs divided by the seconds of their minute (the newest: so far).
    assert sum(value > 0 for value in chart["finished"]) <= 2  # ran within a minute or two
    assert page.evaluate(PAINTED, FINISHED_RGB)
    assert page.evaluate(PAINTED, FAILED_RGB)
    assert not page.evaluate(PAINTED, [0, 0, 255])  # the check tells colours apart
    total = page.locator("#chart-total")
    expect(total).to_have_text("9 finished, 3 failed in the last 1h (error rate 33.3%).")

    page.locator("#ranges a[data-range='24h']").click()
    expect(page.locator("#chart[data-drawn='24h']")).to_have_count(1)
    expect(page).to_have_url(f"{dashboard.url}/?range=24h")
    hourly = page.evaluate("() => Array.from(window.celeriacChart.data[1])")
    assert len(hourly) == 24 and max(hourly) > 0 and hourly.count(0) >= 22
    expect(total).to_have_text("9 finished, 3 failed in the last 24h (error rate 33.3%).")
    assert page.evaluate(PAINTED, FINISHED_RGB)


def test_the_overviews_figures(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    failed = tasks.fail.delay("no")
    wait_until(lambda: failed.state == "FAILURE", message="the failure")
    wait_until(lambda: _recorded(tasks) == (2, 1), timeout=15, message="the rollups flushed")
    tasks.add.apply_async((0, 0), queue="nobody-consumes")
    slots = tasks.app.broker.workers()[0].info["concurrency"]

    login(page, dashboard.url, VIEWER_PASSWORD)
    expect(page.locator("[data-figure=workers]")).to_have_text("1")
    expect(page.locator("[data-figure=busy]")).to_have_text(f"0 of {slots}")
    expect(page.locator("[data-figure=processed]")).to_have_text(re.compile(r"^2 \d+\.\d\d/s$"))
    expect(page.locator("[data-figure=failed]")).to_have_text("1")
    expect(page.locator("[data-figure=error-rate]")).to_have_text("50.0%")
    depth = page.locator("tr[data-queue='nobody-consumes'] td[data-count=depth]")
    expect(depth).to_have_text("1")
    expect(page.locator("tr[data-queue='celery'] td[data-count=depth]")).to_have_text("0")
    expect(page.locator("[data-figure=oldest]")).not_to_have_text("-")
    for n in range(2):
        tasks.add.apply_async((n, n), queue="nobody-consumes")
    expect(depth).to_have_text("3", timeout=5_000)  # no reload: the figures refresh themselves
