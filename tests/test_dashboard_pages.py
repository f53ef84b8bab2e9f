"""The dashboard's pages and data access on a real SQLite broker and backend, through its
Flask app (no browser: tests/browser drives the pages in chromium): dead letters, a
worker's heartbeat and blocking reports, the newest event of the log, the
live stream's cursor, and the task page of a task with no result yet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")

from werkzeug.security import generate_password_hash

from celeriac import Celeriac
from celeriac.brokers.base import WorkerEvent
from celeriac.dashboard import create_app
from celeriac.dashboard.data import DashboardData

PASSWORD = "pages"
ORIGIN = "http://localhost"


@pytest.fixture
def celeriac_app(tmp_path: Path) -> Iterator[Celeriac]:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    app = Celeriac("pages", broker_url=url, result_backend=url,
                   dashboard_viewer_password_hash=generate_password_hash(PASSWORD,
                                                                          "pbkdf2:sha256:1000"))

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


@pytest.fixture
def client(celeriac_app: Celeriac) -> Any:
    client = create_app(celeriac_app).test_client()
    client.post("/login", data={"password": PASSWORD}, headers={"Origin": ORIGIN})
    return client


def test_dead_letters_page(celeriac_app: Celeriac, client: Any) -> None:
    sent = celeriac_app.tasks["add"].delay(1, 2)
    deliveries = celeriac_app.broker.fetch(["celery"], 1, consumer="test", lease=30)
    celeriac_app.broker.dead_letter(deliveries, "max deliveries (5) exceeded <b>")
    html = client.get("/dead").data.decode()
    assert sent.id in html and "add" in html
    assert "max deliveries (5) exceeded &lt;b&gt;" in html
    assert sent.id in client.get("/dead?queue=celery").data.decode()
    assert sent.id not in client.get("/dead?queue=other").data.decode()
    queues = client.get("/queues").data.decode()
    assert 'href="/dead?queue=celery">1</a>' in queues


def test_workers_page_shows_the_heartbeat_and_the_latest_blocking_report(
        celeriac_app: Celeriac, client: Any) -> None:
    broker = celeriac_app.broker
    broker.heartbeat("node-1@host", {
        "hostname": "host", "pid": 42, "pool": "gevent", "processes": 2, "concurrency": 200,
        "queues": ["celery"], "running": 1, "processed": 17, "children": [43, 44],
        "stalls": {"slow.task": 3},
        "consumers": {"c1": [["d1", "task-id-1", "slow.task", 1, False, "celery", time.time() - 1000],
                             ["d2", "task-id-2", "old.node", 1, False, "celery"]]},
    }, ttl=30)
    broker.emit([WorkerEvent("worker-online", "node-1@host")])
    for n in range(3):
        broker.emit([WorkerEvent("task-blocked", "node-1@host",
                                 {"task": "slow.task", "id": f"blocker-{n}", "pid": 43,
                                  "stack": f"File 'slow.py', line {n}, in run\n  time.sleep(5)"})])
    html = client.get("/workers").data.decode()
    assert 'data-worker="node-1@host"' in html
    assert "1 busy of 200" in html and "43, 44" in html and "task-id-1" in html
    assert 'data-running-for>for 17 min<' in html  # since the supervisor learnt it started
    assert 'data-running-for>-<' in html  # a node of an older version says no start time
    assert "slow.task</td><td class=\"n\">3" in html
    assert "blocker-2" in html and "line 2, in run" in html
    assert html.index("blocker-2") < html.index("blocker-0")  # newest first
    assert client.get("/workers?fragment=1").data.decode().startswith('<div id="workers"')


@pytest.mark.parametrize(("info", "heading"), [
    ({"pool": "gevent"}, "Hub stalls"),
    ({"pool": "asyncio"}, "Loop stalls"),
    ({"pool": "asyncio",
      "pools": [{"pool": "asyncio", "processes": 1, "concurrency": 100, "queues": ["io"]},
                {"pool": "gevent", "processes": 1, "concurrency": 100, "queues": ["web"]}]},
     "Hub and loop stalls"),
])
def test_stalls_are_named_for_the_pool_that_stalled(celeriac_app: Celeriac, client: Any,
                                                    info: dict[str, Any], heading: str) -> None:
    """An asyncio pool's stalls are its event loop's (issue 13's detector), a green pool's
    its hub's: the page says which."""
    celeriac_app.broker.heartbeat("node-1@host", {"hostname": "host", "pid": 42, "processes": 1,
                                                  "concurrency": 100, "queues": ["celery"],
                                                  "stalls": {"slow.task": 1}, **info}, ttl=30)
    html = client.get("/workers").data.decode()
    assert f"<h3>{heading}</h3>" in html


def test_last_event_seq(celeriac_app: Celeriac) -> None:
    data = DashboardData(celeriac_app)
    assert data.last_event_seq() == 0
    for count in (1, 2, 3, 17, 64):
        celeriac_app.broker.emit([WorkerEvent("worker-heartbeat", "n")] * count)
        newest = celeriac_app.broker.events(0, 100_000)[-1].seq
        assert data.last_event_seq() == newest


def test_live_stream_sends_events_after_the_cursor(celeriac_app: Celeriac, client: Any) -> None:
    celeriac_app.broker.emit([WorkerEvent("worker-online", "n1"),
                              WorkerEvent("worker-heartbeat", "n1"),
                              WorkerEvent("task-blocked", "n1", {"task": "<script>x</script>"})])
    first = celeriac_app.broker.events(0, 10)[0].seq
    response = client.get(f"/live/stream?after={first}")
    assert response.mimetype == "text/event-stream"
    text = ""
    for chunk in response.response:  # the stream lasts a minute: read what is needed
        text += chunk.decode() if isinstance(chunk, bytes) else chunk
        if "task-blocked" in text:
            break
    response.close()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["task-blocked"]  # after the cursor; no heartbeats
    assert events[0]["data"]["task"] == "<script>x</script>"  # JSON: the page writes text
    assert f"id: {first + 2}" in text


def test_a_task_with_no_result_yet(celeriac_app: Celeriac, client: Any) -> None:
    sent = celeriac_app.tasks["add"].delay(1, 2)
    html = client.get(f"/tasks/{sent.id}").data.decode()
    assert 'data-state="PENDING"' in html
    assert "Revoke" not in html  # a viewer
    response = client.get(f"/tasks?id={sent.id}")
    assert response.headers["Location"] == f"/tasks/{sent.id}"


def test_healthz_says_what_is_unreachable_and_nothing_more(tmp_path: Path) -> None:
    app = Celeriac("down", broker_url=f"sqlite:///{tmp_path / 'missing' / 'c.db'}",
                   result_backend=f"sqlite:///{tmp_path / 'c.db'}")
    response = create_app(app).test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["broker"] == "unreachable" and body["backend"] == "ok"
    assert "missing" not in response.data.decode()


def test_arguments_can_be_redacted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    app = Celeriac("redacted", broker_url=url, result_backend=url, dashboard_redact_args=True,
                   dashboard_viewer_password_hash=generate_password_hash(PASSWORD,
                                                                          "pbkdf2:sha256:1000"))
    from celeriac.backends.base import ResultRecord

    app.backend.store(ResultRecord("secret-task", "SUCCESS", result=1, name="charge",
                                   args=["4111 1111 1111 1111"], kwargs={"cvv": "123"}))
    client = create_app(app).test_client()
    client.post("/login", data={"password": PASSWORD}, headers={"Origin": ORIGIN})
    html = client.get("/tasks/secret-task").data.decode()
    assert "4111" not in html and "cvv" not in html
    assert html.count("[redacted]") == 2
    app.close()
