"""The Queues page's pause and resume, and the Scheduled, Retries and Dead letters pages
(listing, pagination, requeue, run now, delete, each behind a confirmation step), through
the dashboard's real Flask app on a real SQLite broker and backend; RabbitMQ's refusals
on a real RabbitMQ (tests/browser drives the same pages in chromium)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")

from werkzeug.security import generate_password_hash

from celeriac import Celeriac
from celeriac.dashboard import create_app
from celeriac.dashboard.messages import page_links

ADMIN = "admin pages"
VIEWER = "viewer pages"
ORIGIN = {"Origin": "http://localhost"}


def _app(broker_url: str, backend_url: str, **settings: Any) -> Celeriac:
    app = Celeriac("messages", broker_url=broker_url, result_backend=backend_url,
                   dashboard_admin_password_hash=generate_password_hash(ADMIN, "pbkdf2:sha256:1000"),
                   dashboard_viewer_password_hash=generate_password_hash(VIEWER,
                                                                         "pbkdf2:sha256:1000"),
                   **settings)

    @app.task(name="add")
    def add(x: Any, y: Any) -> Any:
        return x + y

    return app


@pytest.fixture
def celeriac_app(tmp_path: Path) -> Iterator[Celeriac]:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    app = _app(url, url)
    yield app
    app.close()


def _client(app: Celeriac, password: str) -> Any:
    client = create_app(app).test_client()
    response = client.post("/login", data={"password": password}, headers=ORIGIN,
                           follow_redirects=True)  # the page shows "Logged in as ..."
    assert response.status_code == 200 and response.request.path == "/"
    return client


@pytest.fixture
def admin(celeriac_app: Celeriac) -> Any:
    return _client(celeriac_app, ADMIN)


@pytest.fixture
def viewer(celeriac_app: Celeriac) -> Any:
    return _client(celeriac_app, VIEWER)


def _bury(app: Celeriac, n: int, queue: str = "celery", reason: str = "boom") -> list[str]:
    """``n`` dead letters of ``queue``; their task ids."""
    sent = [app.tasks["add"].apply_async((i, i), queue=queue).id for i in range(n)]
    deliveries = app.broker.fetch([queue], n, consumer="test", lease=30)
    assert len(deliveries) == n
    app.broker.dead_letter(deliveries, reason)
    return sent


def _flash(html: str) -> list[str]:
    return re.findall(r'<p class="flash[^"]*" role="\w+">([^<]*)</p>', html)


def test_queues_page_shows_every_count_and_pauses_and_resumes(celeriac_app: Celeriac,
                                                              admin: Any) -> None:
    add = celeriac_app.tasks["add"]
    add.delay(1, 1)
    add.apply_async((1, 2), countdown=3600)
    add.apply_async((1, 2), countdown=3600, retries=1)
    add.apply_async((1, 2), countdown=3600, retries=2)
    _bury(celeriac_app, 1)
    html = admin.get("/queues").data.decode()
    row = html[html.index('data-queue="celery"'):]
    row = row[:row.index("</tr>")]
    assert 'data-count="ready">1<' in row and 'data-count="dead">' in row
    assert 'href="/scheduled?queue=celery">1</a>' in row
    assert 'href="/retries?queue=celery">2</a>' in row
    assert re.search(r"data-age>\d", row)  # the oldest ready message's age
    assert "paused" not in row and 'data-action="pause"' in row
    response = admin.post("/queues/celery/pause", headers=ORIGIN, follow_redirects=True)
    assert celeriac_app.broker.paused() == {"celery"}
    html = response.data.decode()
    assert "Paused celery" in _flash(html)[0]
    assert '<span class="paused">paused</span>' in html and 'data-action="resume"' in html
    admin.post("/queues/celery/resume", headers=ORIGIN)
    assert celeriac_app.broker.paused() == set()


def test_an_empty_queue_a_worker_consumes_can_be_paused(celeriac_app: Celeriac, admin: Any) -> None:
    celeriac_app.broker.heartbeat("n@h", {"queues": ["quiet"]}, ttl=30)
    assert 'data-queue="quiet"' in admin.get("/queues").data.decode()
    admin.post("/queues/quiet/pause", headers=ORIGIN)
    celeriac_app.broker.heartbeat("n@h", {"queues": []}, ttl=30)
    html = admin.get("/queues?fragment=1").data.decode()
    assert 'data-queue="quiet" data-paused' in html  # paused, no message, no consumer: shown


def test_a_viewer_cannot_pause_requeue_run_or_delete(celeriac_app: Celeriac, viewer: Any) -> None:
    _bury(celeriac_app, 1)
    celeriac_app.tasks["add"].apply_async((1, 2), countdown=3600)
    html = viewer.get("/dead").data.decode()
    assert "Requeue" not in html and 'type="checkbox"' not in html
    assert 'data-action="pause"' not in viewer.get("/queues").data.decode()
    assert viewer.post("/queues/celery/pause", headers=ORIGIN).status_code == 403
    for kind, action in (("dead", "requeue"), ("dead", "delete"), ("scheduled", "run"),
                         ("scheduled", "delete")):
        assert viewer.get(f"/{kind}/{action}?queue=celery&all=1").status_code == 403
        assert viewer.post(f"/{kind}/{action}", data={"queue": "celery", "all": "1"},
                           headers=ORIGIN).status_code == 403
    stats = celeriac_app.broker.stats()["celery"]
    assert (stats.dead, stats.scheduled, stats.paused) == (1, 1, False)


def test_an_action_from_another_origin_is_refused(celeriac_app: Celeriac, admin: Any) -> None:
    _bury(celeriac_app, 1)
    elsewhere = {"Origin": "http://evil.example"}
    assert admin.post("/dead/requeue", data={"queue": "celery", "all": "1"},
                      headers=elsewhere).status_code == 403
    assert admin.post("/queues/celery/pause", headers=elsewhere).status_code == 403
    assert celeriac_app.broker.stats()["celery"].dead == 1
    assert celeriac_app.broker.paused() == set()


def test_dead_letters_listed_escaped_and_requeued_after_confirmation(celeriac_app: Celeriac,
                                                                     admin: Any) -> None:
    [first, second] = _bury(celeriac_app, 2, reason="max deliveries <b>exceeded</b>")
    html = admin.get("/dead?queue=celery").data.decode()
    assert f'href="/tasks/{first}"' in html and f'href="/tasks/{second}"' in html
    assert "max deliveries &lt;b&gt;exceeded&lt;/b&gt;" in html
    ids = re.findall(r'<tr data-id="([^"]+)" data-task-id="' + first, html)
    assert len(ids) == 1
    # The row's link asks first; nothing happens until the confirmation is sent.
    confirm = admin.get(f"/dead/requeue?queue=celery&id={ids[0]}")
    assert confirm.status_code == 200
    page = confirm.data.decode()
    assert "the 1 chosen dead letter(s) of queue celery" in page
    assert f'name="id" value="{ids[0]}"' in page and 'action="/dead/requeue"' in page
    assert celeriac_app.broker.stats()["celery"].dead == 2
    done = admin.post("/dead/requeue", data={"queue": "celery", "id": ids[0]}, headers=ORIGIN,
                      follow_redirects=True)
    assert _flash(done.data.decode()) == ["Requeued 1 dead letter(s) of celery."]
    stats = celeriac_app.broker.stats()["celery"]
    assert (stats.dead, stats.ready) == (1, 1)
    [ready] = celeriac_app.broker.browse("celery", "ready").items
    assert ready.task_id == first and ready.deliveries == 0


def test_delete_all_dead_letters_after_confirmation(celeriac_app: Celeriac, admin: Any) -> None:
    _bury(celeriac_app, 3)
    page = admin.get("/dead/delete?queue=celery&all=1").data.decode()
    assert "all 3 dead letter(s) of queue celery" in page and 'name="all" value="1"' in page
    done = admin.post("/dead/delete", data={"queue": "celery", "all": "1"}, headers=ORIGIN,
                      follow_redirects=True)
    assert _flash(done.data.decode()) == ["Deleted 3 dead letter(s) of celery."]
    assert celeriac_app.broker.stats()["celery"].dead == 0


def test_nothing_chosen_asks_to_choose(celeriac_app: Celeriac, admin: Any) -> None:
    _bury(celeriac_app, 1)
    response = admin.get("/dead/requeue?queue=celery", follow_redirects=True)
    assert _flash(response.data.decode()) == ["Choose the messages first (or all of them)."]
    assert admin.get("/dead/run?queue=celery&all=1").status_code == 404  # not a dead letter's
    assert admin.post("/dead/requeue", data={"all": "1"}, headers=ORIGIN).status_code == 400


def test_scheduled_and_retries_pages_run_now_and_delete(celeriac_app: Celeriac,
                                                        admin: Any) -> None:
    add = celeriac_app.tasks["add"]
    later = add.apply_async((1, 2), countdown=3600, queue="later")
    retry = add.apply_async(("<i>x</i>", 2), countdown=3600, retries=1, queue="later")
    html = admin.get("/scheduled").data.decode()  # the first queue holding some
    assert "Scheduled of later" in html and f'data-task-id="{later.id}"' in html
    assert retry.id not in html
    assert "[1, 2]" in html and '<th>due</th>' in html
    html = admin.get("/retries?queue=later").data.decode()
    assert f'data-task-id="{retry.id}"' in html and later.id not in html
    assert "&lt;i&gt;x&lt;/i&gt;" in html and "<i>x</i>" not in html
    [message_id] = re.findall(r'<tr data-id="([^"]+)"', html)
    assert "retry now" in admin.get(f"/retries/run?queue=later&id={message_id}").data.decode()
    done = admin.post("/retries/run", data={"queue": "later", "id": message_id}, headers=ORIGIN,
                      follow_redirects=True)
    assert _flash(done.data.decode()) == ["Made ready 1 retry message(s) of later."]
    assert [m.task_id for m in celeriac_app.broker.browse("later", "ready").items] == [retry.id]
    done = admin.post("/scheduled/delete", data={"queue": "later", "all": "1"}, headers=ORIGIN,
                      follow_redirects=True)
    assert _flash(done.data.decode()) == ["Deleted 1 scheduled message(s) of later."]
    assert celeriac_app.broker.stats()["later"].scheduled == 0


def test_run_all_now_goes_page_by_page(celeriac_app: Celeriac, admin: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("celeriac.dashboard.data.MAX_PAGE", 4)
    for n in range(10):
        celeriac_app.tasks["add"].apply_async((n, n), countdown=3600)
    admin.post("/scheduled/run", data={"queue": "celery", "all": "1"}, headers=ORIGIN)
    stats = celeriac_app.broker.stats()["celery"]
    assert (stats.ready, stats.scheduled) == (10, 0)


def test_pagination(celeriac_app: Celeriac, admin: Any) -> None:
    sent = [celeriac_app.tasks["add"].apply_async((n, n), countdown=3600 + n).id
            for n in range(23)]
    html = admin.get("/scheduled?queue=celery&limit=10").data.decode()
    assert "1\u201310 of" in html and 'data-total="23"' in html
    assert re.findall(r'data-task-id="([^"]+)"', html) == sent[:10]  # due first
    assert 'href="/scheduled?queue=celery&amp;offset=10&amp;limit=10" rel="next"' in html
    html = admin.get("/scheduled?queue=celery&limit=10&offset=10").data.decode()
    assert "11\u201320 of" in html and re.findall(r'data-task-id="([^"]+)"', html) == sent[10:20]
    assert '<span class="current" aria-current="page">2</span>' in html
    assert 'rel="prev"' in html and 'rel="next"' in html
    html = admin.get("/scheduled?queue=celery&limit=10&offset=20").data.decode()
    assert re.findall(r'data-task-id="([^"]+)"', html) == sent[20:] and 'rel="next"' not in html
    html = admin.get("/scheduled?queue=celery&limit=nonsense&offset=-5").data.decode()
    assert "1\u201323 of" in html  # bad values fall back to the defaults and bounds


def test_page_links() -> None:
    assert page_links(0, 10, 0) == [(1, 0)]
    assert page_links(0, 10, 30) == [(1, 0), (2, 10), (3, 20)]
    assert page_links(50, 10, 200) == [(1, 0), (0, None), (4, 30), (5, 40), (6, 50), (7, 60),
                                       (8, 70), (0, None), (20, 190)]


def test_arguments_can_be_redacted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    app = _app(url, url, dashboard_redact_args=True)
    app.tasks["add"].apply_async(("4111 1111 1111 1111", 1), countdown=3600)
    html = _client(app, VIEWER).get("/scheduled").data.decode()
    assert "4111" not in html and "[redacted]" in html
    app.close()


def test_rabbitmq_refusals_show_the_brokers_message(amqp_url: str, redis_url: str) -> None:
    app = _app(amqp_url, redis_url)
    try:
        app.tasks["add"].apply_async((1, 2), countdown=3600, queue="ladder")
        client = _client(app, ADMIN)
        html = client.get("/scheduled?queue=ladder").data.decode()
        assert 'data-total="1"' in html
        assert "cannot be listed: counted only" in html  # the Page's note
        for action in ("run", "delete"):
            done = client.post(f"/scheduled/{action}", data={"queue": "ladder", "all": "1"},
                               headers=ORIGIN, follow_redirects=True)
            assert done.status_code == 200
            [message] = _flash(done.data.decode())
            assert "refused by the broker" in message and "delay ladder" in message
            assert "Traceback" not in done.data.decode()
        assert app.broker.stats()["ladder"].scheduled == 1
    finally:
        app.close()
