"""The dashboard's Tasks page (search by id prefix, name and state, paginated by the
backend) and a task's page (record, lineage and children as links, its events as a
timeline, arguments escaped and redacted), through the real Flask app on the memory,
SQLite and Redis brokers and backends (tests/browser/test_tasks.py drives them in
chromium with a real worker)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")

from werkzeug.security import generate_password_hash

from celeriac import Celeriac
from celeriac.backends import BACKENDS
from celeriac.backends.base import ResultRecord
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.search import TaskSummary
from celeriac.brokers.base import WorkerEvent
from celeriac.dashboard import create_app
from celeriac.dashboard.tasks import TIMELINE_SCAN
from celeriac.states import FAILURE, RETRY, STARTED, SUCCESS

PASSWORD = "tasks page"
ORIGIN = {"Origin": "http://localhost"}
XSS = "<script>alert('x')</script>"
KINDS = ["memory", "sqlite", "redis"]


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'c.db'}"
    return str(request.getfixturevalue("redis_url"))  # a key prefix of this test's own


def _app(url: str, **settings: Any) -> Celeriac:
    return Celeriac("tasks", broker_url=url, result_backend=url,
                    dashboard_viewer_password_hash=generate_password_hash(PASSWORD,
                                                                           "pbkdf2:sha256:1000"),
                    **settings)


def _client(app: Celeriac) -> Any:
    client = create_app(app).test_client()
    client.post("/login", data={"password": PASSWORD}, headers=ORIGIN)
    return client


@pytest.fixture(params=KINDS)
def celeriac_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celeriac]:
    app = _app(_url(request.param, request, tmp_path))
    yield app
    app.close()


@pytest.fixture
def client(celeriac_app: Celeriac) -> Any:
    return _client(celeriac_app)


def _store(app: Celeriac, *records: ResultRecord) -> None:
    """One store each, a little apart: the order of the stores is the search's order."""
    for record in records:
        app.backend.store(record)
        time.sleep(0.003)


def _record(status: str, name: str, task_id: str | None = None, **fields: Any) -> ResultRecord:
    return ResultRecord(task_id=task_id or str(uuid.uuid4()), status=status, name=name,
                        date_done=time.time(), **fields)


def _rows(html: str) -> list[str]:
    return re.findall(r'<tr data-task-id="([^"]+)">', html)


def _get(client: Any, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, response.data.decode()[:2000]
    return str(response.data.decode())


def test_search_by_name_state_and_id_prefix_newest_first(celeriac_app: Celeriac,
                                                         client: Any) -> None:
    records = [_record(SUCCESS, "shop.a"), _record(FAILURE, "shop.a"),
               _record(SUCCESS, "shop.b"), _record(SUCCESS, "shop.a", task_id="abc-1"),
               _record(STARTED, "shop.b", task_id="abc-2")]
    _store(celeriac_app, *records)
    newest_first = [r.task_id for r in reversed(records)]
    html = _get(client, "/tasks")
    assert _rows(html) == newest_first and 'data-total="5"' in html
    assert f'href="/tasks/{records[1].task_id}"' in html  # each row links to its page
    assert _rows(_get(client, "/tasks?name=shop.a")) == ["abc-1", records[1].task_id,
                                                         records[0].task_id]
    assert _rows(_get(client, "/tasks?state=SUCCESS")) == ["abc-1", records[2].task_id,
                                                          records[0].task_id]
    assert _rows(_get(client, "/tasks?state=success&name=shop.a")) == ["abc-1",
                                                                       records[0].task_id]
    html = _get(client, "/tasks?prefix=abc-")
    assert _rows(html) == ["abc-2", "abc-1"] and 'data-total="2"' in html
    html = _get(client, "/tasks?name=shop.c")
    assert _rows(html) == [] and "No stored task matches." in html
    # The form shows the search it ran.
    html = _get(client, "/tasks?prefix=abc-&state=STARTED")
    assert 'name="prefix" value="abc-"' in html and 'name="state" value="STARTED"' in html
    assert _rows(html) == ["abc-2"]


def test_search_pages_on_the_server_and_keeps_the_filters(celeriac_app: Celeriac,
                                                          client: Any) -> None:
    records = [_record(SUCCESS, "shop.page") for _ in range(7)]
    _store(celeriac_app, *records, _record(SUCCESS, "shop.other"))
    newest_first = [r.task_id for r in reversed(records)]
    html = _get(client, "/tasks?name=shop.page&limit=3")
    assert _rows(html) == newest_first[:3] and "1\u20133 of" in html
    assert 'data-total="7"' in html
    assert 'href="/tasks?name=shop.page&amp;offset=3&amp;limit=3" rel="next"' in html
    html = _get(client, "/tasks?name=shop.page&limit=3&offset=3")
    assert _rows(html) == newest_first[3:6] and "4\u20136 of" in html
    assert '<span class="current" aria-current="page">2</span>' in html
    assert 'rel="prev"' in html and 'rel="next"' in html
    html = _get(client, "/tasks?name=shop.page&limit=3&offset=6")
    assert _rows(html) == newest_first[6:] and 'rel="next"' not in html
    html = _get(client, "/tasks?name=shop.page&offset=30")
    assert _rows(html) == [] and "Nothing on this page." in html


@pytest.mark.parametrize("query, message", [
    ("state=" + XSS, "No such state: &#34;&lt;script&gt;"),
    ("state=progress", "No such state: &#39;progress&#39;"),
    ("name=" + "n" * 256, "The task name is too long: at most 255 characters."),
    ("prefix=" + "p" * 300, "The id prefix is too long: at most 255 characters."),
])
def test_bad_input_is_a_message_not_an_error(tmp_path: Path, query: str, message: str) -> None:
    app = _app(f"sqlite:///{tmp_path / 'c.db'}")
    html = _get(_client(app), f"/tasks?{query}", status=400)
    assert message in html and '<p class="error" role="alert">' in html
    assert XSS not in html and 'id="jump"' in html
    app.close()


def test_a_custom_state_and_odd_numbers_are_accepted(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path / 'c.db'}")
    _store(app, _record("PROGRESS", "shop.long", task_id="custom-1"))
    client = _client(app)
    assert _rows(_get(client, "/tasks?state=PROGRESS")) == ["custom-1"]
    # Offsets and limits that are not numbers or out of bounds fall back to the bounds.
    assert _rows(_get(client, "/tasks?limit=nonsense&offset=-4")) == ["custom-1"]
    assert _rows(_get(client, "/tasks?limit=100000")) == ["custom-1"]
    app.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_without_the_index_the_page_says_so_and_still_jumps_to_an_id(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    app = _app(_url(kind, request, tmp_path), result_index=False)
    _store(app, _record(SUCCESS, "shop.a", task_id="known-id"))
    client = _client(app)
    html = _get(client, "/tasks?name=shop.a")
    assert 'id="search-off"' in html and "result_index" in html
    assert 'id="search"' not in html and 'id="jump"' in html
    assert client.get("/tasks?id=known-id").headers["Location"] == "/tasks/known-id"
    assert 'data-state="SUCCESS"' in _get(client, "/tasks/known-id")  # detail by id works
    app.close()


class UnsearchableBackend(MemoryBackend):
    """A backend that keeps results but cannot search them (as a third party's may)."""

    schemes = ("unsearchable",)

    def search(self, *, task_id_prefix: str | None = None, name: str | None = None,
               state: str | None = None, offset: int = 0,
               limit: int = 50) -> tuple[list[TaskSummary], int]:
        raise NotImplementedError


def test_a_backend_that_cannot_search_says_so(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "unsearchable", UnsearchableBackend)
    app = Celeriac("nosearch", broker_url="memory://", result_backend="unsearchable://",
                   dashboard_viewer_password_hash=generate_password_hash(PASSWORD,
                                                                          "pbkdf2:sha256:1000"))
    html = _get(_client(app), "/tasks")
    assert 'id="search-off"' in html and "this result backend cannot search" in html
    assert 'id="jump"' in html
    app.close()


def _events(app: Celeriac, task_id: str, *steps: tuple[str, dict[str, Any]],
            worker: str = "shop-1@host", at: float = 1_800_000_000.0) -> None:
    app.broker.emit([WorkerEvent(kind, worker, {"uuid": task_id, "name": "shop.charge",
                                                "hostname": worker, **fields}, at + n)
                     for n, (kind, fields) in enumerate(steps)])


def test_a_tasks_page_shows_its_timeline_lineage_and_children(celeriac_app: Celeriac,
                                                              client: Any) -> None:
    parent = _record(SUCCESS, "shop.order", task_id="parent-1",
                     children=[[["child-1", None], None], [["group-9", None],
                               [[["member-1", None], None], [["member-2", None], None]]]])
    child = _record(SUCCESS, "shop.charge", task_id="child-1", result={"paid": XSS},
                    retries=1, parent_id="parent-1", group_id="group-7", deliveries=2,
                    args=[XSS, 1999], kwargs={"note": XSS}, worker="shop-1@host")
    _store(celeriac_app, parent, child)
    _events(celeriac_app, "someone-else", ("task-received", {"args": "()", "retries": 0}))
    _events(celeriac_app, "child-1",
            ("task-received", {"args": f"('{XSS}', 1999)", "kwargs": "{}", "retries": 0,
                               "parent_id": "parent-1", "root_id": "root-0"}),
            ("task-started", {"pid": 4242}),
            ("task-retried", {"exception": "ConnectionError('bank busy')",
                              "traceback": "Traceback ..."}),
            ("task-received", {"args": f"('{XSS}', 1999)", "kwargs": "{}", "retries": 1}),
            ("task-started", {"pid": 4243}),
            ("task-succeeded", {"runtime": 0.25, "result": f"{{'paid': '{XSS}'}}"}))
    html = _get(client, "/tasks/child-1")
    assert re.findall(r'data-event="([\w-]+)"', html) == [
        "task-received", "task-started", "task-retried", "task-received", "task-started",
        "task-succeeded"]
    timeline = html[html.index('id="timeline"'):]
    assert "shop-1@host" in timeline and "2027-01-15 08:00:00 UTC" in timeline
    assert "+5.000 s" in timeline and "pid 4242" in timeline and "in 0.250 s" in timeline
    assert "ConnectionError(&#39;bank busy&#39;)" in timeline and "retry 1" in timeline
    assert 'class="event bad" data-event="task-retried"' in html
    assert 'data-state="SUCCESS"' in html
    assert 'data-retries="1"' in html and 'data-deliveries="2"' in html
    assert '<dd data-parent><a href="/tasks/parent-1">' in html
    assert '<dd data-root><a href="/tasks/root-0">' in html
    assert "<dd data-group><code>group-7</code>" in html
    assert XSS not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    html = _get(client, "/tasks/parent-1")
    children = html[html.index('id="children"'):]
    assert re.findall(r'href="/tasks/([\w-]+)"', children) == ["child-1", "member-1",
                                                              "member-2"]
    assert "None in the broker's event log" in html  # it has no events


def test_a_retried_task_is_not_its_own_parent(celeriac_app: Celeriac, client: Any) -> None:
    """A retry's message names the task itself as parent (as Celery's do): the page shows
    the first run's parent from its events, or none."""
    _store(celeriac_app, _record(SUCCESS, "shop.charge", task_id="retried-1", retries=1,
                                 parent_id="retried-1"))
    html = _get(client, "/tasks/retried-1")
    assert "data-parent" not in html
    _events(celeriac_app, "retried-1",
            ("task-received", {"retries": 0, "parent_id": "order-1"}),
            ("task-received", {"retries": 1, "parent_id": "retried-1"}))
    html = _get(client, "/tasks/retried-1")
    assert '<dd data-parent><a href="/tasks/order-1">' in html


def test_a_task_known_only_from_its_events_shows_what_they_tell(celeriac_app: Celeriac,
                                                                client: Any) -> None:
    _events(celeriac_app, "running-1",
            ("task-received", {"args": f"('{XSS}',)", "kwargs": "{'n': 1}", "retries": 2,
                               "parent_id": "parent-x"}),
            ("task-started", {"pid": 77}))
    html = _get(client, "/tasks/running-1")
    assert 'data-state="STARTED"' in html and "what its events tell" in html
    assert "<dd>shop.charge</dd>" in html and "<dd>shop-1@host</dd>" in html
    assert 'data-retries="2"' in html and 'data-deliveries="1"' in html
    assert '<dd data-parent><a href="/tasks/parent-x">' in html
    assert "(&#39;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#39;,)" in html
    assert XSS not in html
    _events(celeriac_app, "running-1",
            ("task-failed", {"exception": "KeyError('sku')", "traceback": "Traceback: sku"}),
            at=1_800_000_010.0)
    html = _get(client, "/tasks/running-1")
    assert 'data-state="FAILURE"' in html and "KeyError(&#39;sku&#39;)" in html
    assert "Traceback: sku" in html
    html = _get(client, "/tasks/never-sent")
    assert 'data-state="PENDING"' in html and "No result is stored under this id:" in html
    assert 'data-deliveries=""' in html


def test_the_timeline_reads_the_newest_events_unless_asked_for_all(
        celeriac_app: Celeriac, client: Any) -> None:
    """The page reads back through TIMELINE_SCAN events at most (fast whatever the log
    holds), says so when that left the task's older events unread, and reads them all
    when asked."""
    _store(celeriac_app, _record(SUCCESS, "shop.charge", task_id="old-1"))
    _events(celeriac_app, "old-1", ("task-received", {"args": "()", "retries": 0}),
            ("task-succeeded", {"runtime": 0.1}))
    filler = [WorkerEvent("worker-heartbeat", "shop-2@host", {"n": n}) for n in range(500)]
    for _ in range(TIMELINE_SCAN // len(filler) + 1):
        celeriac_app.broker.emit(filler)
    html = _get(client, "/tasks/old-1")
    assert 'id="events-partial"' in html and "data-event=" not in html
    assert 'href="/tasks/old-1?events=all"' in html
    html = _get(client, "/tasks/old-1?events=all")
    assert re.findall(r'data-event="([\w-]+)"', html) == ["task-received", "task-succeeded"]
    assert 'id="events-partial"' not in html
    _events(celeriac_app, "old-1", ("task-received", {"retries": 0}))  # found: not partial
    assert 'id="events-partial"' not in _get(client, "/tasks/old-1")


def test_redaction_hides_arguments_in_the_record_and_the_events(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path / 'r.db'}", dashboard_redact_args=True)
    _store(app, _record(SUCCESS, "shop.charge", task_id="secret-1",
                        args=["4111 1111 1111 1111"], kwargs={"cvv": "123"}))
    _events(app, "secret-1", ("task-received", {"args": "('4111 1111 1111 1111',)",
                                                "kwargs": "{'cvv': '123'}", "retries": 0}))
    _events(app, "secret-2", ("task-received", {"args": "('4111 1111 1111 1111',)",
                                                "kwargs": "{'cvv': '123'}", "retries": 0}))
    client = _client(app)
    for task_id in ("secret-1", "secret-2"):
        html = _get(client, f"/tasks/{task_id}")
        assert 'data-event="task-received"' in html
        assert "4111" not in html and "cvv" not in html
        assert html.count("[redacted]") == 2  # args and kwargs
    app.close()


def test_the_record_shows_without_events_when_the_broker_cannot_read_them(
        tmp_path: Path) -> None:
    app = Celeriac("split", broker_url=f"sqlite:///{tmp_path / 'missing' / 'b.db'}",
                   result_backend=f"sqlite:///{tmp_path / 'r.db'}",
                   dashboard_viewer_password_hash=generate_password_hash(PASSWORD,
                                                                          "pbkdf2:sha256:1000"))
    _store(app, _record(FAILURE, "shop.charge", task_id="failed-1", exc_type="ValueError",
                        exc_message="declined", traceback="Traceback: declined"))
    html = _get(_client(app), "/tasks/failed-1")
    assert 'data-state="FAILURE"' in html and "ValueError: declined" in html
    assert "Its events could not be read:" in html
    app.close()


def test_retry_state_badge_in_search(tmp_path: Path) -> None:
    app = _app(f"sqlite:///{tmp_path / 'c.db'}")
    _store(app, _record(RETRY, "shop.charge", task_id="retrying-1"))
    html = _get(_client(app), "/tasks?state=RETRY")
    assert '<span class="state state-RETRY" data-state="RETRY">RETRY</span>' in html
    app.close()
