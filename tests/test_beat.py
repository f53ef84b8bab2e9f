"""The beat (celeriac.beat) on real brokers, driven by explicit clock values: entries,
exactly-once sends between several beats, restart without repeat or gap, catch-up once."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.beat import Beat
from celeriac.beat.service import ENTRY_HEADER, RUN_AT_HEADER
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.message import decode
from celeriac.schedules import crontab

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def make_app(url: str, **settings: Any) -> Celeriac:
    app = Celeriac("beatapp", broker=url, backend="memory://", set_as_current=False, **settings)

    @app.task(name="beat.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'b.db'}"


def sent(app: Celeriac, queue: str = "celery") -> list[dict[str, Any]]:
    """Every message in ``queue`` (fetched and acked): its headers and arguments."""
    out = []
    while got := app.broker.fetch([queue], 100, consumer="t", lease=30):
        for delivery in got:
            message = decode(delivery.body)
            out.append({**message.headers, "args": message.args, "kwargs": message.kwargs,
                        "priority": delivery.priority})
        app.broker.ack(got)
    return out


def test_an_entry_starts_counting_when_first_seen_and_then_runs_each_period(url: str) -> None:
    app = make_app(url, beat_schedule={"adder": {"task": "beat.add", "schedule": 10,
                                                 "args": (1, 2)}})
    beat = Beat(app)
    assert beat.tick(T0) <= 10
    assert sent(app) == []  # Celery: the first run is one period after the start
    beat.tick(T0 + 5)
    beat.tick(T0 + 10.2)
    beat.tick(T0 + 15)
    beat.tick(T0 + 20.5)
    runs = sent(app)
    assert [m[RUN_AT_HEADER] for m in runs] == [T0 + 10, T0 + 20]
    assert all(m[ENTRY_HEADER] == "adder" and m["args"] == [1, 2] for m in runs)
    assert all(uuid.UUID(m["id"]).version == 5 for m in runs)
    assert len({m["id"] for m in runs}) == 2


def test_many_beats_send_each_run_once(url: str) -> None:
    app = make_app(url, beat_schedule={"adder": {"task": "beat.add", "schedule": 1,
                                                 "kwargs": {"x": 1, "y": 1}}})
    beats = [Beat(app), Beat(app), Beat(make_app(url))] if url != "memory://" else [Beat(app)] * 3
    beats[2].entries = beats[0].entries
    for step in range(200):  # three beats look at the same moments, in turns
        for beat in beats:
            beat.tick(T0 + step * 0.1)
    times = sorted(m[RUN_AT_HEADER] for m in sent(app))
    assert times == pytest.approx([T0 + k for k in range(1, 20)])


def test_a_restarted_beat_neither_repeats_nor_skips_and_catches_up_once(url: str) -> None:
    app = make_app(url, beat_schedule={"adder": {"task": "beat.add", "schedule": 60,
                                                 "args": [2, 2]}})
    Beat(app).tick(T0)
    Beat(app).tick(T0 + 61)
    assert [m[RUN_AT_HEADER] for m in sent(app)] == [T0 + 60]
    Beat(app).tick(T0 + 62)  # a new beat: the run of T0 + 60 is not sent again
    assert sent(app) == []
    Beat(app).tick(T0 + 3600 + 30)  # nobody ran for an hour: the newest missed run, once
    assert [m[RUN_AT_HEADER] for m in sent(app)] == [T0 + 3600]
    Beat(app).tick(T0 + 3600 + 60)
    assert [m[RUN_AT_HEADER] for m in sent(app)] == [T0 + 3660]


def test_crontab_entries_and_their_starting_deadline(url: str, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(url, timezone="Europe/London", beat_cron_starting_deadline=120,
                   beat_schedule={"noon": {"task": "beat.add", "args": [1, 1],
                                           "schedule": crontab(minute=0, hour=12)}})
    beat = Beat(app)
    noon_bst = datetime(2026, 6, 1, 11, 0, tzinfo=timezone.utc).timestamp()  # 12:00 in London
    beat.tick(noon_bst - 7200)
    beat.tick(noon_bst - 1)
    assert sent(app) == []
    beat.tick(noon_bst + 30)
    assert [m[RUN_AT_HEADER] for m in sent(app)] == [noon_bst]
    caplog.set_level(logging.WARNING, "celeriac.beat")
    beat.tick(noon_bst + 86400 + 600)  # ten minutes late, past the 120 s deadline: skipped
    assert sent(app) == []
    assert "beat_cron_starting_deadline" in caplog.text
    beat.tick(noon_bst + 2 * 86400 + 5)
    assert [m[RUN_AT_HEADER] for m in sent(app)] == [noon_bst + 2 * 86400]


def test_add_periodic_task_and_options(url: str) -> None:
    app = make_app(url, beat_schedule={"a": {"task": "beat.add", "schedule": timedelta(seconds=5),
                                             "args": [1, 2], "options": {"queue": "periodic",
                                                                         "priority": 7,
                                                                         "expires": 30}}})
    add = app.tasks["beat.add"]
    key = app.add_periodic_task(5, add.s(y=3), args=(4,), priority=2)
    assert key == "beat.add(4, y=3)" and app.periodic_tasks[key]["args"] == (4,)
    assert app.add_periodic_task(5, add.s(1, 1), name="named") == "named"
    beat = Beat(app)
    assert sorted(e.name for e in beat.entries) == ["a", "beat.add(4, y=3)", "named"]
    beat.tick(T0)
    beat.tick(T0 + 5)
    [queued] = sent(app, "periodic")
    assert queued["priority"] == 7 and queued["args"] == [1, 2] and queued["expires"] is not None
    others = sorted(sent(app), key=lambda m: m[ENTRY_HEADER])
    assert [(m[ENTRY_HEADER], m["args"], m["kwargs"], m["priority"]) for m in others] == [
        ("beat.add(4, y=3)", [4], {"y": 3}, 2), ("named", [1, 1], {}, 0)]


def test_entries_added_from_on_after_configure_are_seen_by_the_beat() -> None:
    app = make_app("memory://")
    add = app.tasks["beat.add"]

    @app.on_after_configure.connect
    def setup(sender: Celeriac, **kwargs: Any) -> None:
        sender.add_periodic_task(crontab(minute="*/5"), add.s(2, 2), name="five")

    assert [entry.name for entry in Beat(app).entries] == ["five"]


def test_bad_entries_are_refused_with_the_entry_named() -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"x": {"schedule": 5}}, ConfigurationError, "'task' must be a task name"),
        ({"x": {"task": "t"}}, ConfigurationError, "'schedule' is missing"),
        ({"x": {"task": "t", "schedule": "often"}}, ConfigurationError, "seconds, a timedelta"),
        ({"x": {"task": "t", "schedule": 5, "option": {}}}, ConfigurationError, "unknown key"),
        ({"x": {"task": "t", "schedule": 5, "options": {"queu": "q"}}}, UnknownSettingError,
         "did you mean 'queue'"),
        ({"x": {"task": "t", "schedule": 5, "args": "12"}}, ConfigurationError, "list or tuple"),
    ]
    for schedule, error, text in cases:
        with pytest.raises(error, match=text):
            Celeriac("bad", broker="memory://", set_as_current=False, beat_schedule=schedule)
    app = make_app("memory://", beat_schedule={"x": {"task": "beat.add", "schedule": 5}})
    with pytest.raises(ConfigurationError, match=r"periodic task 'x'.*missing 2 required"):
        Beat(app)
    with pytest.raises(ConfigurationError, match="add_periodic_task"):
        app.add_periodic_task(5, "beat.add")


def test_plan_lists_last_and_next_runs(url: str) -> None:
    app = make_app(url, beat_schedule={"adder": {"task": "beat.add", "schedule": 30,
                                                 "args": [1, 2]}})
    beat = Beat(app)
    [fresh] = beat.plan(T0)
    assert fresh.last_run is None and fresh.next_run.timestamp() == pytest.approx(T0 + 30)
    beat.tick(T0)
    [seen] = beat.plan(T0 + 1)
    assert seen.last_run is not None and seen.last_run.timestamp() == pytest.approx(T0)
    assert seen.next_run.timestamp() == pytest.approx(T0 + 30)


def test_beat_settings_are_accepted_and_remote_control_refused() -> None:
    app = Celeriac("conf", broker="memory://", set_as_current=False, beat_max_loop_interval=5,
                   beat_schedule_filename="x.db", beat_sync_every=3,
                   beat_scheduler="celery.beat:PersistentScheduler")
    assert app.conf.beat_max_loop_interval == 5.0
    with pytest.raises(ConfigurationError, match="cannot replace it"):
        app.conf.beat_scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
    with pytest.raises(ConfigurationError, match="beat's remote control"):
        app.conf.beat_enable_remote_control = True


def test_run_says_once_that_the_broker_fails_and_stops_when_asked(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import shutil
    import threading
    import time

    (tmp_path / "gone").mkdir()
    app = make_app(f"sqlite:///{tmp_path / 'gone' / 'b.db'}",
                   beat_schedule={"a": {"task": "beat.add", "schedule": 1, "args": [1, 1]}})
    beat = Beat(app)
    shutil.rmtree(tmp_path / "gone")  # the beat's thread opens its connection: it cannot
    caplog.set_level(logging.DEBUG, "celeriac.beat")
    stop = threading.Event()
    thread = threading.Thread(target=beat.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 20
    while caplog.text.count("cannot read the schedule's state") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    failures = [r for r in caplog.records if "cannot read the schedule's state" in r.getMessage()]
    assert [r.levelno for r in failures[:2]] == [logging.WARNING, logging.DEBUG]
