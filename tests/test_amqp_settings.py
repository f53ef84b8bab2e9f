"""The RabbitMQ broker's settings (issue 12): the registry entries and Celery's names for
them, the options the app gives ``Broker.configure``, and the bound RabbitMQ's
consumer_timeout puts on hard time limits (the start-up check and the executor's refusal
at receipt). The RabbitMQ broker itself is tested in its own files; the worker refusing
to start on a real node is an end-to-end test that needs it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.app.base import broker_options, queue_type
from celeriac.brokers import BROKERS, SQLiteBroker, broker_from_url
from celeriac.brokers.base import OPTION_NAMES, Delivery
from celeriac.exceptions import ConfigurationError
from celeriac.middleware import ACK, DEAD, Pipeline
from celeriac.pools.threads import ThreadPool
from celeriac.settings import KNOBS, SETTINGS, Settings
from celeriac.states import FAILURE, SUCCESS
from celeriac.worker import consumer_timeout
from celeriac.worker.consumer_timeout import checked_hard_limit, limit_bound, over_bound
from celeriac.worker.executor import Executor

AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


def conf(**values: Any) -> Settings:
    return Settings(environ={}, **values)


# -- the registry ------------------------------------------------------------------------
def test_defaults() -> None:
    settings = conf()
    assert settings.broker_state_url is None
    assert settings.broker_queue_type == "quorum"
    assert settings.task_default_queue_type is None
    assert settings.task_create_missing_queue_type is None
    assert settings.broker_heartbeat == 120.0  # Celery's
    assert settings.broker_use_ssl is False
    assert settings.broker_connection_timeout == 4.0  # Celery's
    assert settings.broker_consumer_timeout == 1800.0  # RabbitMQ's default consumer_timeout
    assert settings.task_queue_max_priority is None


def test_broker_heartbeat_is_a_setting_not_a_knob() -> None:
    assert "broker_heartbeat" not in {knob.name for knob in KNOBS}
    assert "knob" not in SETTINGS["broker_heartbeat"].doc
    assert conf(broker_heartbeat=0).broker_heartbeat == 0.0
    assert conf(broker_heartbeat=None).broker_heartbeat is None
    assert conf(broker_heartbeat="30").broker_heartbeat == 30.0


@pytest.mark.parametrize(("name", "value"), [
    ("broker_state_url", "amqp://localhost"),
    ("broker_state_url", "localhost:6379"),
    ("broker_queue_type", "stream"),
    ("broker_queue_type", None),
    ("task_default_queue_type", "lazy"),
    ("task_create_missing_queue_type", "Quorum"),
    ("broker_heartbeat", -1),
    ("broker_heartbeat", "often"),
    ("broker_use_ssl", "maybe"),
    ("broker_use_ssl", ["ca.pem"]),
    ("broker_connection_timeout", 0),
    ("broker_consumer_timeout", -5),
    ("task_queue_max_priority", 0),
    ("task_queue_max_priority", 256),
])
def test_bad_values_are_refused_naming_the_setting(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"setting {name}="):
        conf(**{name: value})


def test_good_values() -> None:
    settings = conf(broker_state_url="redis://localhost:6379/1", broker_queue_type="classic",
                    broker_use_ssl={"ca_certs": "ca.pem"}, task_queue_max_priority="10",
                    broker_connection_timeout="2.5")
    assert settings.broker_use_ssl == {"ca_certs": "ca.pem"}
    assert settings.task_queue_max_priority == 10
    assert settings.broker_connection_timeout == 2.5
    for url in ("rediss://h/0", "unix:///tmp/redis.sock", "sqlite:///state.db"):
        assert conf(broker_state_url=url).broker_state_url == url
    assert conf(broker_use_ssl="true").broker_use_ssl is True


def test_celery_names_are_accepted_not_refused_as_unsupported() -> None:
    app = Celeriac("p", broker="memory://", backend="memory://", set_as_current=False,
                   task_default_queue_type="classic", task_create_missing_queue_type="classic",
                   broker_use_ssl=False, broker_connection_timeout=4, task_queue_max_priority=10)
    assert app.conf.task_default_queue_type == "classic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = conf(CELERY_DEFAULT_QUEUE_TYPE="classic", BROKER_HEARTBEAT=10,
                   CELERY_QUEUE_MAX_PRIORITY=5, BROKER_USE_SSL=True, BROKER_CONNECTION_TIMEOUT=1)
    assert (old.task_default_queue_type, old.broker_heartbeat, old.task_queue_max_priority,
            old.broker_use_ssl, old.broker_connection_timeout) == ("classic", 10.0, 5, True, 1.0)


# -- the queue type and Celery's names for it -------------------------------------------
def test_queue_type_comes_from_whichever_name_is_set() -> None:
    assert queue_type(conf()) == "quorum"
    assert queue_type(conf(broker_queue_type="classic")) == "classic"
    assert queue_type(conf(task_default_queue_type="classic")) == "classic"
    assert queue_type(conf(task_create_missing_queue_type="classic")) == "classic"
    assert queue_type(conf(task_default_queue_type="quorum",
                           task_create_missing_queue_type="quorum")) == "quorum"
    assert queue_type(conf(broker_queue_type="classic",
                           task_default_queue_type="classic")) == "classic"


def test_queue_types_that_disagree_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"task_default_queue_type='quorum', "
                                                 r"task_create_missing_queue_type='classic'.*"
                                                 "set broker_queue_type alone"):
        queue_type(conf(task_default_queue_type="quorum",
                        task_create_missing_queue_type="classic"))
    with pytest.raises(ConfigurationError, match="broker_queue_type='quorum'"):
        queue_type(conf(broker_queue_type="quorum", task_default_queue_type="classic"))


@pytest.mark.usefixtures("fresh_unused_log")
def test_queue_types_are_not_checked_for_another_broker() -> None:
    settings = conf(broker_url="redis://localhost", task_default_queue_type="quorum",
                    task_create_missing_queue_type="classic")
    assert broker_options(settings)["queue_type"] == "quorum"

# -- the options the app gives the broker -----------------------------------------------
def test_broker_options_come_from_the_settings() -> None:
    settings = conf(broker_url=AMQP, result_backend="redis://localhost/2",
                    broker_state_url="sqlite:///state.db", task_default_queue_type="classic",
                    broker_heartbeat=30, broker_use_ssl={"ca_certs": "ca.pem"},
                    broker_connection_timeout=2, task_queue_max_priority=10)
    options = broker_options(settings)
    assert tuple(options) == OPTION_NAMES
    assert options == {"state_url": "sqlite:///state.db", "result_backend": "redis://localhost/2",
                       "queue_type": "classic", "heartbeat": 30.0,
                       "use_ssl": {"ca_certs": "ca.pem"}, "connection_timeout": 2.0,
                       "max_priority": 10}


def test_heartbeats_off_is_zero_for_the_broker() -> None:
    assert broker_options(conf(broker_url=AMQP, broker_heartbeat=None))["heartbeat"] == 0.0
    assert broker_options(conf(broker_url=AMQP, broker_heartbeat=0))["heartbeat"] == 0.0


def test_ssl_with_another_broker_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"broker_use_ssl is for a RabbitMQ broker.*"
                                                 r"redis:// broker.*rediss://"):
        broker_options(conf(broker_url="redis://localhost", broker_use_ssl=True))
    broker_options(conf(broker_url="redis://localhost", broker_use_ssl=False))


@pytest.fixture
def fresh_unused_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which unused settings this process already logged."""
    from celeriac.app import base

    monkeypatch.setattr(base, "_UNUSED_LOGGED", set())


@pytest.mark.usefixtures("fresh_unused_log")
def test_rabbitmq_settings_with_another_broker_are_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = conf(broker_url="sqlite:///x.db", broker_heartbeat=10,
                    task_default_queue_type="classic", broker_connection_timeout=4.0)
    with caplog.at_level(logging.WARNING, logger="celeriac"):
        broker_options(settings)
        broker_options(settings)
    lines = [r.getMessage() for r in caplog.records if "RabbitMQ broker" in r.getMessage()]
    assert lines == ["setting(s) task_default_queue_type, broker_heartbeat, "
                     "broker_connection_timeout: for a RabbitMQ broker (amqp://) only, unused "
                     "by the sqlite:// broker"]


@pytest.mark.usefixtures("fresh_unused_log")
def test_nothing_is_logged_for_defaults_or_a_rabbitmq_broker(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="celeriac"):
        broker_options(conf(broker_url="sqlite:///x.db"))
        broker_options(conf(broker_url="sqlite:///x.db", broker_heartbeat=0))  # off: what it is
        broker_options(conf(broker_url=AMQP, broker_heartbeat=10, broker_queue_type="classic"))
    assert [r for r in caplog.records if "RabbitMQ broker" in r.getMessage()] == []


class RecordingBroker(SQLiteBroker):
    """A real SQLite broker that keeps what ``configure`` was given."""

    def configure(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)


def test_broker_from_url_configures_the_broker(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BROKERS, "sqlite", RecordingBroker)
    broker = broker_from_url(f"sqlite:///{tmp_path}/b.db", options={"queue_type": "classic"})
    assert isinstance(broker, RecordingBroker)
    assert broker.options == {"queue_type": "classic"}
    broker.close()


def test_the_app_builds_its_broker_with_the_options(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BROKERS, "sqlite", RecordingBroker)
    url = f"sqlite:///{tmp_path}/b.db"
    app = Celeriac("p", broker=url, backend="memory://", set_as_current=False,
                   broker_consumer_timeout=600, broker_connection_timeout=7)
    try:
        broker = app.broker
        assert isinstance(broker, RecordingBroker)
        assert broker.options == broker_options(app.conf)
        assert broker.options["connection_timeout"] == 7.0
        assert broker.options["result_backend"] == "memory://"
    finally:
        app.close()


# -- consumer_timeout bounds hard time limits -------------------------------------------
def test_the_bound_is_consumer_timeout_less_two_leases() -> None:
    assert limit_bound(conf(broker_url=AMQP)) == 1800.0 - 2 * 30.0
    assert limit_bound(conf(broker_url="pyamqp://h//", broker_consumer_timeout=600,
                            broker_lease_timeout=60)) == 480.0
    assert limit_bound(conf(broker_url="amqps://h/")) == 1740.0
    assert limit_bound(conf(broker_url="redis://localhost")) is None
    assert limit_bound(conf(broker_url="sqlite:///x.db")) is None


def test_a_hard_limit_within_the_bound_is_kept() -> None:
    assert checked_hard_limit(1000.0, 1800.0, 30.0) == 1000.0
    assert checked_hard_limit(1740.0, 1800.0, 30.0) == 1740.0


def test_no_hard_limit_becomes_the_bound() -> None:
    assert checked_hard_limit(None, 1800.0, 30.0) == 1740.0


def test_a_hard_limit_above_the_bound_is_refused_with_the_fixes() -> None:
    with pytest.raises(ConfigurationError) as info:
        checked_hard_limit(3600.0, 1800.0, 30.0)
    text = str(info.value)
    for part in ("task_time_limit=3600s", "broker_consumer_timeout=1800s",
                 "broker_lease_timeout=30s", "1740s", "Lower task_time_limit",
                 "consumer_timeout in rabbitmq.conf", "consumer-timeout policy"):
        assert part in text, part


def test_a_consumer_timeout_that_leaves_no_time_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"leaves a task no time.*lower "
                                                 r"broker_lease_timeout"):
        checked_hard_limit(None, 60.0, 30.0)


def test_worker_start_gives_the_bound_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="celeriac.supervisor"):
        assert consumer_timeout.worker_hard_limit(conf(broker_url=AMQP), None) == 1740.0
        assert consumer_timeout.worker_hard_limit(conf(broker_url=AMQP), 60.0) == 60.0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "tasks get a hard time limit of 1740s" in lines[0]


def test_worker_start_refuses_a_limit_above_the_bound() -> None:
    with pytest.raises(ConfigurationError, match="task_time_limit=2000s"):
        consumer_timeout.worker_hard_limit(conf(broker_url=AMQP), 2000.0)


def test_worker_start_on_another_broker_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="celeriac.supervisor"):
        assert consumer_timeout.worker_hard_limit(conf(broker_url="sqlite:///x.db"), None) is None
        assert consumer_timeout.worker_hard_limit(
            conf(broker_url="redis://localhost", broker_heartbeat=0), 99999.0) is None
    assert caplog.records == []


def test_worker_start_says_when_heartbeats_are_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="celeriac.supervisor"):
        consumer_timeout.worker_hard_limit(conf(broker_url=AMQP, broker_heartbeat=0), 60.0)
    assert [r.getMessage() for r in caplog.records] == [
        "broker_heartbeat is off: a dead RabbitMQ connection is noticed only by TCP"]


def test_over_bound() -> None:
    assert over_bound(None, 1740.0) is None
    assert over_bound(1740.0, 1740.0) is None
    assert over_bound(99999.0, None) is None
    reason = over_bound(1741.0, 1740.0)
    assert reason is not None and "1741s" in reason and "1740s" in reason


# -- a task whose own time_limit is above the bound fails at receipt --------------------
@pytest.fixture
def producer() -> Iterator[Celeriac]:
    app = Celeriac("producer", broker="memory://", backend="memory://", set_as_current=False)
    yield app
    app.close()


def _worker_app(broker_url: str) -> Celeriac:
    """The worker's side: only its settings and tasks are used (the executor never
    touches its broker for these runs), so its broker URL may be RabbitMQ's."""
    app = Celeriac("worker", broker=broker_url, backend="memory://", set_as_current=False,
                   broker_consumer_timeout=100, broker_lease_timeout=10)  # bound: 80 s

    @app.task(name="long", time_limit=81)
    def long() -> str:
        return "ran"

    @app.task(name="short", time_limit=80)
    def short() -> str:
        return "ran"

    return app


def _delivery(producer: Celeriac, name: str, **options: Any) -> Delivery:
    producer.send_task(name, (), **options)
    [delivery] = producer.broker.fetch(["celery"], 1, consumer="test", lease=30.0)
    return delivery


def _executor(app: Celeriac) -> Executor:
    return Executor(app, ThreadPool(1, app.conf), Pipeline([]), lambda delivery: None)


def test_a_task_over_the_bound_is_failed_at_receipt(producer: Celeriac) -> None:
    outcome = _executor(_worker_app(AMQP)).handle(_delivery(producer, "long"))
    assert outcome.action == DEAD and not outcome.ran
    assert "task long not run: its hard time limit (81s)" in outcome.reason
    assert outcome.record is not None and outcome.record.status == FAILURE
    assert outcome.record.exc_type == "ConfigurationError"


def test_a_time_limit_sent_with_the_message_counts_too(producer: Celeriac) -> None:
    outcome = _executor(_worker_app(AMQP)).handle(_delivery(producer, "short", time_limit=500))
    assert outcome.action == DEAD and "(500s)" in outcome.reason


def test_a_task_within_the_bound_runs(producer: Celeriac) -> None:
    outcome = _executor(_worker_app(AMQP)).handle(_delivery(producer, "short"))
    assert outcome.action == ACK and outcome.ran
    assert outcome.record is not None and outcome.record.status == SUCCESS


def test_another_broker_runs_any_time_limit(producer: Celeriac, tmp_path: Path) -> None:
    app = _worker_app(f"sqlite:///{tmp_path}/w.db")
    try:
        outcome = _executor(app).handle(_delivery(producer, "long"))
    finally:
        app.close()
    assert outcome.action == ACK and outcome.record is not None
    assert outcome.record.status == SUCCESS
