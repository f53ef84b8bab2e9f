"""Parsing ``-P`` values into pool groups, and routing by the ``pool`` task option."""

from __future__ import annotations

import pytest

from celeriac import Celeriac
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.worker.options import PoolGroup, parse_groups


def parse(*values: str, queues: list[str] | None = None) -> list[PoolGroup]:
    return parse_groups(values, concurrency=4, processes=None, queues=queues or ["celery"],
                        default_queue="celery")


def test_plain_name_takes_concurrency_and_queues_from_the_flags() -> None:
    assert parse("threads", queues=["a", "b"]) == [
        PoolGroup("threads", 4, ["a", "b", "celery.threads"])]


def test_name_concurrency_and_queues() -> None:
    assert parse("gevent:1000:io,feeds", "prefork:2:cpu") == [
        PoolGroup("gevent", 1000, ["io", "feeds", "celery.gevent"]),
        PoolGroup("prefork", 2, ["cpu", "celery.prefork"]),
    ]
    assert parse("gevent:10") == [PoolGroup("gevent", 10, ["celery", "celery.gevent"])]


@pytest.mark.parametrize("value, message", [
    ("nosuch:4", "unknown pool 'nosuch'"),
    ("gevent:many", "not a number"),
    ("gevent:0", "at least 1"),
])
def test_bad_values_are_clear_errors(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse(value)


def test_pool_option_routes_to_the_pools_own_queue() -> None:
    app = Celeriac("t", broker="memory://", backend="memory://")

    @app.task(pool="prefork")
    def crunch() -> None: ...

    @app.task(pool="gevent", queue="explicit")
    def fetch() -> None: ...

    assert app.route(crunch.name) == "celery.prefork"
    assert app.route(fetch.name) == "explicit", "an explicit queue option wins over pool"
    app.conf.task_routes = {crunch.name: "routed"}
    assert app.route(crunch.name) == "routed", "task_routes win over pool"
    assert app.route(crunch.name, queue="given") == "given"


def test_pool_option_is_checked() -> None:
    app = Celeriac("t", broker="memory://", backend="memory://")
    with pytest.raises(ConfigurationError, match="choose from"):
        app.task(pool="gevnt")
    with pytest.raises(UnknownSettingError, match="did you mean 'pool'"):
        app.task(pol="gevent")
