"""Screenshots of each dashboard page into docs/dashboard/ (run ``scripts/screenshots``).

Starts, in a temporary directory, a SQLite project with a gevent worker (``-E``, with a
beat: ``-B``), a second beat (``celeriac beat``) and a ``celeriac dashboard``, gives them
something to show (finished, failed and retried tasks, a running one, a task that blocks the hub,
waiting, scheduled and retrying messages, a dead letter, a paused queue, periodic tasks),
then photographs each page as an admin sees it with Debian's chromium.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser.stack import (  # noqa: E402
    ADMIN_PASSWORD,
    launch_browser,
    login,
    missing_browser,
    password_env,
    start_dashboard,
)

OUT = ROOT / "docs" / "dashboard"
TASKS = '''
import time
from celeriac import Celeriac
from celeriac.schedules import crontab

app = Celeriac("shop", timezone="Europe/London")
app.conf.result_extended = True
app.conf.beat_schedule = {
    "refresh-banner": {"task": "shop.resize_image", "schedule": 5.0,
                       "args": ["/media/banner.jpg", 1200]},
    "monthly-report": {"task": "shop.build_report", "args": ["last-month"],
                       "schedule": crontab(minute=0, hour=6, day_of_month=1),
                       "options": {"queue": "reports"}},
}

@app.on_after_configure.connect
def periodic(sender, **kwargs):
    sender.add_periodic_task(crontab(minute="*/15", hour="8-18", day_of_week="mon-fri"),
                             purge_carts.s(days=3), name="purge-stale-carts")

@app.task
def purge_carts(days):
    return days

@app.task
def resize_image(path, width):
    time.sleep(0.05)
    return {"path": path, "width": width}

@app.task
def charge_card(order_id, cents):
    raise ValueError(f"card declined for order {order_id}")

@app.task(bind=True)
def ship_order(self, order_id):
    if self.request.retries == 0:  # the carrier's API is busy the first time
        raise self.retry(countdown=0.2)
    return {"order": order_id, "carrier": "parcel-post"}

@app.task
def build_report(month):
    time.sleep(120)

@app.task
def crunch(n):
    end = time.monotonic() + 0.4
    while time.monotonic() < end:  # pure CPU: holds the gevent hub
        pass
    return n
'''


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"screenshots: gave up waiting for {what}")


def _prepare(path: Path) -> Any:
    os.chdir(path)
    sys.path.insert(0, str(path))
    (path / "shop.py").write_text(TASKS)
    import shop

    return shop


def _load(shop: Any) -> dict[str, str]:
    """Work for the pages to show; the ids of the tasks photographed."""
    for n in range(12):
        shop.resize_image.delay(f"/media/{n}.jpg", 640)
    failed = shop.charge_card.delay("A-1042", 1999)
    shop.crunch.delay(1)
    running = shop.build_report.delay("2026-11")
    for n in range(7):
        shop.resize_image.apply_async((f"/media/big-{n}.jpg", 2048), queue="thumbnails")
    shop.build_report.apply_async(("2026-12",), countdown=3600, queue="reports")
    for n, month in enumerate(("2027-01", "2027-02", "2027-03")):
        shop.build_report.apply_async((month,), countdown=86400 * (n + 2), queue="reports")
    for n in range(3):  # retries waiting for their countdown (as self.retry() sends them)
        shop.charge_card.apply_async((f"A-11{n}0", 1250 + n), countdown=300 * (n + 1),
                                     retries=n + 1, queue="payments")
    broker = shop.app.broker
    shop.charge_card.apply_async(("A-0999", 500), queue="payments")
    broker.dead_letter(broker.fetch(["payments"], 1, consumer="screenshots", lease=30),
                       "max deliveries (5) exceeded; it crashed its worker process while running alone")
    broker.pause("thumbnails")
    shipped = shop.ship_order.delay("A-1043")
    _wait(lambda: failed.state == "FAILURE", "the failed task")
    _wait(lambda: shipped.state == "SUCCESS", "the retried task")
    _wait(lambda: sum(row.failed for row in broker.metrics(time.time() - 120, time.time(), "")),
          "the metric rollups of the failed task")  # the Overview's chart
    return {"failed": failed.id, "running": running.id, "retried": shipped.id}


def main() -> int:
    why = missing_browser()
    if why:
        print(f"screenshots: {why}", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="celeriac-shots-") as tmp:
        path = Path(tmp)
        url = f"sqlite:///{path / 'shop.db'}"
        env = {**os.environ, "CELERIAC_BROKER_URL": url, "CELERIAC_RESULT_BACKEND": url,
               "PYTHONUNBUFFERED": "1", **password_env()}
        os.environ.update({"CELERIAC_BROKER_URL": url, "CELERIAC_RESULT_BACKEND": url})
        shop = _prepare(path)
        worker_log = path / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", "shop", "worker", "-E", "-P", "gevent",
             "-c", "20", "-n", "shop-1@web", "-l", "INFO", "-B"],
            cwd=path, env=env, stdout=worker_log.open("w"), stderr=subprocess.STDOUT)
        beat_log = path / "beat.log"
        beat = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "shop", "beat"],
                                cwd=path, env=env, stdout=beat_log.open("w"),
                                stderr=subprocess.STDOUT)
        dashboard = start_dashboard(path, env, app="shop")
        try:
            _wait(lambda: "all worker processes ready" in worker_log.read_text(), "the worker")
            ids = _load(shop)
            _wait(lambda: "Sending due task refresh-banner" in worker_log.read_text()
                  + beat_log.read_text(), "a periodic run")
            _wait(lambda: "blocking the event loop" in worker_log.read_text(), "a blocking report")
            time.sleep(2.5)  # a heartbeat with the running task and the stall
            with sync_playwright() as playwright:
                browser = launch_browser(playwright)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                _shoot(page, dashboard.url, ids, shop)
                browser.close()
        finally:
            dashboard.stop()
            beat.send_signal(signal.SIGTERM)
            worker.send_signal(signal.SIGQUIT)
            beat.wait(30)
            worker.wait(30)
    print(f"screenshots: written to {OUT.relative_to(ROOT)}/")
    return 0


def _shoot(page: Any, url: str, ids: dict[str, str], shop: Any) -> None:
    page.goto(f"{url}/queues")
    page.screenshot(path=OUT / "login.png")
    login(page, url, ADMIN_PASSWORD)
    page.wait_for_selector("#chart[data-drawn='1h']")
    page.wait_for_timeout(300)
    page.screenshot(path=OUT / "overview.png", full_page=True)
    for name, path in (("queues", "/queues"), ("workers", "/workers"),
                       ("scheduled", "/scheduled?queue=reports"), ("retries", "/retries"),
                       ("dead-letters", "/dead"), ("periodic", "/periodic"),
                       ("confirm", "/dead/requeue?queue=payments&all=1"),
                       ("tasks", "/tasks"),
                       ("task", f"/tasks/{ids['failed']}"),
                       ("task-retried", f"/tasks/{ids['retried']}"),
                       ("task-running", f"/tasks/{ids['running']}")):
        page.goto(f"{url}{path}")
        page.wait_for_timeout(300)
        page.screenshot(path=OUT / f"{name}.png", full_page=True)
    page.goto(f"{url}/live")
    page.wait_for_selector("#live-status.live")
    for n in range(6):
        shop.resize_image.delay(f"/media/live-{n}.jpg", 320)
    page.wait_for_function("document.querySelectorAll('#live tbody tr').length >= 12")
    page.screenshot(path=OUT / "live.png", full_page=False)
    text = page.inner_text("#live")
    assert re.search(r"task-succeeded", text), text


if __name__ == "__main__":
    sys.exit(main())
