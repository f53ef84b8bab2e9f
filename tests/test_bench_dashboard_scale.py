"""How ``bench/dashboard_scale.py`` finds the pages it measures: every GET route of the
dashboard's Flask app, its parameters filled, and the query arguments each page reads (on
an empty SQLite broker: what is measured, not how fast; the bench itself times them)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask, request
from werkzeug.security import generate_password_hash

from celeriac import Celeriac
from celeriac.dashboard import create_app

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def scale() -> Iterator[ModuleType]:
    """``bench/dashboard_scale.py``, imported with bench/ on the path only meanwhile."""
    saved = list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("dashboard_scale")
    finally:
        sys.path[:] = saved


@pytest.fixture
def flask(scale: ModuleType, tmp_path: Path) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    app = Celeriac("scale", broker_url=url, result_backend=url,
                   dashboard_admin_password_hash=generate_password_hash(
                       scale.PASSWORD, "pbkdf2:sha256:1000"),
                   dashboard_metrics_token=scale.TOKEN)
    flask = create_app(app, secret_key="test")
    flask.request_class = scale._RecordingRequest
    yield flask
    app.close()


def client(flask: Flask, scale: ModuleType) -> Any:
    client = flask.test_client()
    login = client.post("/login", data={"password": scale.PASSWORD},
                        headers={"Origin": "http://localhost"})
    assert login.status_code == 302
    return client


def test_every_get_route_but_login_and_static_is_measured(scale: ModuleType, flask: Flask) -> None:
    urls = scale.pages(flask, scale.route_values("the-task"))
    paths = {url.path for url in urls}
    assert {"/", "/queues", "/dead", "/workers", "/metrics", "/live/stream"} <= paths
    assert "/tasks/the-task" in paths and "/queues/celery/purge" in paths
    assert not {"/login", "/logout"} & paths and not any(p.startswith("/static") for p in paths)
    assert "/queues/celery/pause" not in paths  # POST only
    # an any(...) parameter takes each of its values; the label shows them, not the ids
    assert {"/dead/requeue", "/scheduled/run", "/retries/delete"} <= paths
    assert "/tasks/<task_id>" in {url.label for url in urls}


def test_a_new_route_is_measured_and_one_it_cannot_fill_stops_the_run(
        scale: ModuleType, flask: Flask) -> None:
    flask.add_url_rule("/workers/<path:worker>/detail", "worker_detail", lambda worker: worker)
    paths = {url.path for url in scale.pages(flask, scale.route_values("t"))}
    assert f"/workers/{scale.WORKERS[0]}/detail" in paths
    flask.add_url_rule("/gadgets/<int:gadget>", "gadget", lambda gadget: str(gadget))
    with pytest.raises(SystemExit, match="parameter 'gadget'"):
        scale.pages(flask, scale.route_values("t"))


def test_query_arguments_are_found_by_asking_each_page(scale: ModuleType, flask: Flask) -> None:
    def search() -> str:
        return f"found {request.args.get('name', '')}"

    flask.add_url_rule("/search", "search", search)
    urls = {url.path: url for url in scale.pages(flask, scale.route_values("t"))}
    browser = client(flask, scale)

    def found(path: str) -> list[str]:
        return [url.path for url in scale.variants(browser, urls[path])]

    assert found("/queues") == ["/queues", "/queues?fragment=1"]
    deep = (scale.DEEP_PAGE - 1) * 50
    assert found("/dead") == ["/dead?queue=payments", f"/dead?queue=payments&offset={deep}"]
    # an action's confirmation needs its queue and "all", found one after the other
    assert found("/dead/requeue") == ["/dead/requeue?queue=payments&all=1"]
    assert found("/dead/run") == []  # no such action: 404
    assert found("/live/stream") == []  # an event stream
    assert found("/search") == ["/search", "/search?name=shop.resize_image"]
