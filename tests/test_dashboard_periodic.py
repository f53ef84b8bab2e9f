"""The Periodic page and the beat's own heartbeat, on a real SQLite broker, through the
dashboard's Flask app (tests/browser drives the page with a real ``celeriac beat``):
entries with their schedules in words, escaped and redactable arguments, last runs
from the broker and next runs from the schedule, the beats that hold them, and beats
kept out of what lists worker nodes (Workers page, status, remote control)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("flask")

from werkzeug.security import generate_password_hash

from celeriac import Celeriac
from celeriac.beat import Beat
from celeriac.beat.presence import BEAT_KIND, beats, worker_nodes
from celeriac.dashboard import create_app
from celeriac.schedules import crontab

PASSWORD = "periodic"
ORIGIN = "http://localhost"


def make_app(tmp_path: Path, **settings: Any) -> Celeriac:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    app = Celeriac("periodic", broker_url=url, result_backend=url, timezone="Europe/London",
                   dashboard_viewer_password_hash=generate_password_hash(PASSWORD,
                                                                          "pbkdf2:sha256:1000"),
                   **settings)

    @app.task(name="report")
    def report(*args: Any, **kwargs: Any) -> None:
        return None

    app.conf.beat_schedule = {
        "every-30s": {"task": "report", "schedule": 30.0, "args": ["<script>x</script>"],
                      "options": {"queue": "reports"}},
        "monday-morning": {"task": "report", "schedule": crontab(hour=7, minute=30,
                                                                 day_of_week="mon"),
                           "kwargs": {"card": "4111 1111"}},
    }

    @app.on_after_configure.connect(weak=False)  # a local function: kept alive
    def more(sender: Celeriac, **kwargs: Any) -> None:
        sender.add_periodic_task(crontab(minute="*/15"), report.s(), name="quarterly")

    return app


@pytest.fixture
def celeriac_app(tmp_path: Path) -> Iterator[Celeriac]:
    app = make_app(tmp_path)
    yield app
    app.close()


def client_of(app: Celeriac) -> Any:
    client = create_app(app).test_client()
    client.post("/login", data={"password": PASSWORD}, headers={"Origin": ORIGIN})
    return client


def row(html: str, entry: str) -> str:
    start = html.index(f'data-entry="{entry}"')
    return html[start:html.index("</tr>", start)]


def test_entries_before_any_beat(celeriac_app: Celeriac) -> None:
    html = client_of(celeriac_app).get("/periodic").data.decode()
    assert "every 30 s" in row(html, "every-30s") and "queue reports" in row(html, "every-30s")
    monday = row(html, "monday-morning")
    assert "at 07:30 on Mon (Europe/London)" in monday and "30 7 * * mon" in monday
    assert "every 15 min (Europe/London)" in row(html, "quarterly")
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x" not in html
    assert "4111 1111" in monday
    for name in ("every-30s", "monday-morning", "quarterly"):
        assert "never" in row(html, name) and "no running beat" in row(html, name)
    assert "data-no-beat" in html
    assert 'aria-current="page">Periodic' in html
    fragment = client_of(celeriac_app).get("/periodic?fragment=1").data.decode()
    assert fragment.startswith('<div id="periodic"')


def test_arguments_can_be_redacted(tmp_path: Path) -> None:
    app = make_app(tmp_path, dashboard_redact_args=True)
    html = client_of(app).get("/periodic").data.decode()
    assert "4111" not in html and "script" not in row(html, "every-30s")
    assert html.count("[redacted]") == 3
    app.close()


def test_a_beats_runs_and_heartbeat(celeriac_app: Celeriac) -> None:
    beat = Beat(celeriac_app, name="beat-a", worker="node-1@host")
    # A second past the last quarter hour: "quarterly" (*/15) cannot come due in the
    # 31 s the ticks span, whatever the wall clock says when the test runs.
    start = time.time() // 900 * 900 + 1
    beat.tick(start)  # first sighting: the entries count from now
    beat.tick(start + 31)  # every-30s is due: beat-a sends it
    beat.presence.beat()
    client = client_of(celeriac_app)
    html = client.get("/periodic").data.decode()
    sent = row(html, "every-30s")
    assert "sent by <span data-sent-by>beat-a</span>" in sent
    assert "every-30s" in beat.presence.sent
    assert "beat-a" in row(html, "quarterly") and "sent by" not in row(html, "quarterly")
    assert 'data-beat="beat-a"' in html and "worker -B of node-1@host" in html
    assert "data-no-beat" not in html
    records = celeriac_app.broker.workers()
    assert [b.name for b in beats(records)] == ["beat-a"]
    assert worker_nodes(records) == []
    assert "beat-a" not in client.get("/workers").data.decode()  # not a worker node
    beat.presence.forget()
    assert "data-no-beat" in client.get("/periodic").data.decode()


def test_next_run_is_computed_from_the_last_run(celeriac_app: Celeriac) -> None:
    now = time.time()
    celeriac_app.broker.beat_claim("every-30s", None, now - 10, [])
    celeriac_app.broker.beat_claim("monday-morning", None, now - 3600, [])
    view = create_app(celeriac_app).extensions["celeriac_dashboard"].data.periodic()
    rows = {r.name: r for r in view.entries}
    assert rows["every-30s"].last_run == now - 10
    assert rows["every-30s"].next_run == pytest.approx(now + 20)
    assert not rows["every-30s"].due
    assert rows["quarterly"].last_run is None and rows["quarterly"].next_run is not None
    # A crontab's stored time that is none of its times is when the first beat saw it.
    assert rows["monday-morning"].seen_only and not rows["every-30s"].seen_only
    monday = datetime(2026, 11, 30, 7, 30, tzinfo=ZoneInfo("Europe/London")).timestamp()
    celeriac_app.broker.beat_claim("monday-morning", now - 3600, monday, [])
    celeriac_app.broker.beat_claim("every-30s", now - 10, now - 40, [])
    rows = {r.name: r for r in create_app(celeriac_app).extensions[
        "celeriac_dashboard"].data.periodic().entries}
    assert rows["every-30s"].due
    assert not rows["monday-morning"].seen_only and rows["monday-morning"].last_run == monday
    html = client_of(celeriac_app).get("/periodic").data.decode()
    assert "not run yet" not in row(html, "monday-morning")
    celeriac_app.broker.beat_claim("quarterly", None, now, [])
    assert "not run yet" in row(client_of(celeriac_app).get("/periodic").data.decode(),
                                "quarterly")


def test_an_entry_only_a_running_beat_knows(celeriac_app: Celeriac) -> None:
    celeriac_app.broker.heartbeat("beat-old", {"kind": BEAT_KIND, "entries": ["retired"],
                                               "sent": {"retired": 12.5}, "pid": 7}, ttl=30)
    celeriac_app.broker.beat_claim("retired", None, 12.5, [])
    html = client_of(celeriac_app).get("/periodic").data.decode()
    retired = row(html, "retired")
    assert "not in this dashboard's app" in retired
    assert "sent by <span data-sent-by>beat-old</span>" in retired


def test_a_schedule_that_cannot_be_read(celeriac_app: Celeriac) -> None:
    celeriac_app.configured()
    celeriac_app.periodic_tasks["broken"] = {"task": "report"}  # no schedule
    html = client_of(celeriac_app).get("/periodic").data.decode()
    assert "data-error" in html and "&#39;schedule&#39; is missing" in html


def test_beat_run_writes_and_removes_its_heartbeat(celeriac_app: Celeriac) -> None:
    beat = Beat(celeriac_app, name="beat-run")
    stop = threading.Event()
    thread = threading.Thread(target=beat.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not beats(celeriac_app.broker.workers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        found = beats(celeriac_app.broker.workers())
        assert [b.name for b in found] == ["beat-run"]
        assert sorted(found[0].info["entries"]) == ["every-30s", "monday-morning", "quarterly"]
    finally:
        stop.set()
        thread.join(10)
    assert beats(celeriac_app.broker.workers()) == []


def test_control_does_not_wait_for_a_beat(celeriac_app: Celeriac) -> None:
    celeriac_app.broker.heartbeat("beat-x", {"kind": BEAT_KIND}, ttl=30)
    started = time.monotonic()
    assert celeriac_app.control.ping(timeout=60) == []  # no node: no reply awaited
    assert time.monotonic() - started < 30  # it did not wait out the timeout for the beat
