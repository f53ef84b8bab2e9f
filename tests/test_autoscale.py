"""``--autoscale``'s policy and parsing (celeriac.worker.autoscale), without processes.

The end-to-end tests (tests/e2e/test_autoscale.py) show a real node growing and
shrinking; these pin Celery's rules: the flag's forms, when the pool grows (at once, to
the load, at most MAX), when it shrinks (to the load, at least MIN, only after the
keepalive), and the settings Celery's configs may carry.
"""

from __future__ import annotations

import logging

import pytest

from celeriac import Celeriac
from celeriac.exceptions import ConfigurationError
from celeriac.worker.autoscale import autoscaled_groups, decide, parse_autoscale
from celeriac.worker.options import PoolGroup


@pytest.mark.parametrize(("value", "bounds"), [
    ("10,3", (10, 3)),
    ("3,10", (10, 3)),     # Celery sorts: the larger is MAX
    ("10", (10, 0)),       # one number: MIN 0
    (" 4 , 1 ", (4, 1)),
    ("1,1", (1, 1)),
])
def test_parse_reads_celery_forms(value: str, bounds: tuple[int, int]) -> None:
    assert parse_autoscale(value) == bounds


@pytest.mark.parametrize(("value", "error"), [
    ("1,2,3", "expected MAX,MIN or MAX"),
    ("ten,3", "expected whole numbers"),
    ("", "expected whole numbers"),
    ("4,-1", "MIN at least 0"),
    ("0", "MAX must be at least 1"),
])
def test_parse_refuses_bad_values(value: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        parse_autoscale(value)


def scaled(current: int, load: int, idle_for: float = 0.0, high: int = 10, low: int = 3,
           keepalive: float = 30.0) -> int:
    return decide(current, high=high, low=low, load=load, idle_for=idle_for,
                  keepalive=keepalive)


def test_grows_at_once_to_the_load() -> None:
    assert scaled(3, load=7) == 7
    assert scaled(3, load=4, idle_for=0.0) == 4  # no keepalive on the way up


def test_grows_no_further_than_max() -> None:
    assert scaled(3, load=50) == 10
    assert scaled(10, load=50) == 10


def test_stays_while_the_load_fits() -> None:
    assert scaled(5, load=5, idle_for=100) == 5
    assert scaled(3, load=0, idle_for=100) == 3  # at MIN already


def test_shrinks_only_after_the_keepalive() -> None:
    assert scaled(8, load=1, idle_for=29.9) == 8
    assert scaled(8, load=1, idle_for=30.0) == 3  # to MIN, not below
    assert scaled(8, load=5, idle_for=31) == 5  # to the load when above MIN


def test_min_zero_keeps_one_slot() -> None:
    assert scaled(4, load=0, idle_for=60, low=0) == 1
    assert scaled(1, load=0, idle_for=60, low=0) == 1


def test_sizes_outside_new_bounds_come_back_at_once() -> None:
    # celeriac control autoscale changed the bounds: no keepalive either way (Celery's update).
    assert scaled(8, load=8, idle_for=0, high=4, low=1) == 4
    assert scaled(1, load=0, idle_for=0, high=10, low=5) == 5


def test_groups_start_at_min(caplog: pytest.LogCaptureFixture) -> None:
    threads = [PoolGroup("threads", 8, ["celery"])]
    with caplog.at_level(logging.INFO, "celeriac.supervisor"):
        [group] = autoscaled_groups(threads, (4, 2), concurrency=8)
    assert (group.concurrency, group.processes) == (2, None)
    assert "-c 8 is not used: --autoscale 4,2 starts the pool at 2" in caplog.text
    [prefork] = autoscaled_groups([PoolGroup("prefork", 8, ["celery"])], (4, 0), None)
    assert (prefork.concurrency, prefork.processes) == (1, 1)
    [solo] = autoscaled_groups([PoolGroup("solo", 1, ["celery"])], (4, 3), None)
    assert solo.processes == 3  # solo runs one task per process: it grows by processes


def test_groups_refused_when_there_is_no_one_pool_to_size() -> None:
    mixed = [PoolGroup("threads", 8, ["io"]), PoolGroup("prefork", 2, ["cpu"])]
    with pytest.raises(ConfigurationError, match="several -P groups"):
        autoscaled_groups(mixed, (4, 1), None)
    with pytest.raises(ConfigurationError, match="--processes 2"):
        autoscaled_groups([PoolGroup("threads", 8, ["io"], processes=2)], (4, 1), None)


def test_celery_autoscaler_setting() -> None:
    app = Celeriac("t", broker_url="memory://", result_backend="memory://",
                   worker_autoscaler="celery.worker.autoscale:Autoscaler")
    assert app.conf.worker_autoscale_keepalive == 30.0
    with pytest.raises(ConfigurationError, match="autoscaler is built in"):
        app.conf.worker_autoscaler = "proj.scaling:MyAutoscaler"


def test_keepalive_from_celery_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSCALE_KEEPALIVE", "2.5")
    app = Celeriac("t", broker_url="memory://", result_backend="memory://")
    assert app.conf.worker_autoscale_keepalive == 2.5
