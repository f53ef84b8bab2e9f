"""celeriac.schedules: Celery's crontab syntax, intervals, and runs across daylight saving."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from celeriac import Celeriac
from celeriac.exceptions import ConfigurationError
from celeriac.schedules import (
    ParseException,
    crontab,
    crontab_parser,
    maybe_schedule,
    schedstate,
    schedule,
)

UTC = timezone.utc
LONDON, NEW_YORK = ZoneInfo("Europe/London"), ZoneInfo("America/New_York")


def app_in(zone: str | None) -> Celeriac:
    return Celeriac("sched", broker="memory://", backend="memory://", timezone=zone,
                    set_as_current=False)


def runs(sched: crontab | schedule, start: datetime, count: int) -> list[datetime]:
    out, at = [], start
    for _ in range(count):
        at = sched.next_run_after(at)
        out.append(at)
    return out


def local(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).strftime("%m-%d %H:%M %Z") for t in times]


# -- parsing ----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "max_", "min_", "expected"), [
    ("*/15", 60, 0, {0, 15, 30, 45}),
    ("0,8-17/2", 24, 0, {0, 8, 10, 12, 14, 16}),
    ("mon-fri", 7, 0, {1, 2, 3, 4, 5}),
    ("fri-mon", 7, 0, {5, 6, 0, 1}),
    ("sun,SAT,7", 7, 0, {0, 6}),
    ("*/3", 31, 1, {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}),
    ("2-12/2", 12, 1, {2, 4, 6, 8, 10, 12}),
    ("jan,jul-aug", 12, 1, {1, 7, 8}),
    ("5", 60, 0, {5}),
])
def test_crontab_fields_read_as_celery_reads_them(spec: str, max_: int, min_: int,
                                                  expected: set[int]) -> None:
    assert crontab_parser(max_, min_).parse(spec) == expected


@pytest.mark.parametrize("spec", ["61", "x", "*/0", "", "1-", "-1", "*/", "mon"])
def test_a_crontab_minute_that_cannot_be_read_is_refused(spec: str) -> None:
    with pytest.raises(ParseException):
        crontab(minute=spec)


def test_crontab_takes_numbers_lists_and_cron_lines() -> None:
    cron = crontab(minute=[0, 30], hour=range(9, 12), day_of_week="mon-fri")
    assert (cron.minute, cron.hour, cron.day_of_week) == ({0, 30}, {9, 10, 11}, {1, 2, 3, 4, 5})
    assert crontab.from_string("*/15 3 1 jan sun") == crontab("*/15", 3, "sun", 1, "jan")
    with pytest.raises(ParseException):
        crontab.from_string("* * *")
    with pytest.raises(ConfigurationError, match="never run"):
        crontab(day_of_month=31, month_of_year="feb,apr")
    with pytest.raises(ParseException):
        crontab(minute=[])
    assert isinstance(maybe_schedule(timedelta(seconds=5)), schedule)
    assert isinstance(maybe_schedule(2.5), schedule)
    with pytest.raises(ConfigurationError):
        maybe_schedule("every minute")
    with pytest.raises(ConfigurationError):
        schedule(0)


# -- next runs ---------------------------------------------------------------------------
def test_crontab_runs_in_utc_without_a_timezone() -> None:
    cron = crontab(minute="*/15", hour="8-9", day_of_week="mon-fri", app=app_in(None))
    start = datetime(2026, 1, 2, 9, 50, tzinfo=UTC)  # a Friday
    assert [t.isoformat() for t in runs(cron, start, 3)] == [
        "2026-01-05T08:00:00+00:00", "2026-01-05T08:15:00+00:00", "2026-01-05T08:30:00+00:00"]
    # day_of_week AND day_of_month (Celery's rule): a Friday the 13th
    friday13 = crontab(0, 0, day_of_week="fri", day_of_month=13, app=app_in(None))
    assert friday13.next_run_after(start).date().isoformat() == "2026-02-13"


def test_crontab_reads_hours_in_the_apps_zone() -> None:
    cron = crontab(minute=0, hour=9, app=app_in("America/New_York"))
    first = cron.next_run_after(datetime(2026, 7, 1, 0, 0, tzinfo=UTC))
    assert first == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)  # 09:00 EDT


def test_new_york_spring_forward_runs_a_skipped_time_at_the_change_once() -> None:
    """2026-03-08: 02:00 EST jumps to 03:00 EDT. A 02:30 job runs at 03:00 that day."""
    cron = crontab(minute=30, hour=2, app=app_in("America/New_York"))
    got = runs(cron, datetime(2026, 3, 7, 12, tzinfo=UTC), 3)
    assert local(got, NEW_YORK) == ["03-08 03:00 EDT", "03-09 02:30 EDT", "03-10 02:30 EDT"]
    every_15 = crontab(minute="*/15", app=app_in("America/New_York"))
    got = runs(every_15, datetime(2026, 3, 8, 6, 40, tzinfo=UTC), 3)  # 01:40 EST
    assert local(got, NEW_YORK) == ["03-08 01:45 EST", "03-08 03:00 EDT", "03-08 03:15 EDT"]


def test_new_york_fall_back_runs_a_fixed_time_once_and_hourly_jobs_every_real_hour() -> None:
    """2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:00-01:59 happens twice."""
    daily = crontab(minute=30, hour=1, app=app_in("America/New_York"))
    got = runs(daily, datetime(2026, 10, 31, 12, tzinfo=UTC), 2)
    assert local(got, NEW_YORK) == ["11-01 01:30 EDT", "11-02 01:30 EST"]
    hourly = crontab(minute=0, app=app_in("America/New_York"))
    got = runs(hourly, datetime(2026, 11, 1, 3, 30, tzinfo=UTC), 4)  # 23:30 EDT
    assert local(got, NEW_YORK) == ["11-01 00:00 EDT", "11-01 01:00 EDT", "11-01 01:00 EST",
                                    "11-01 02:00 EST"]
    assert [t.hour for t in got] == [4, 5, 6, 7]  # one hour apart in real time


def test_london_changes() -> None:
    """2026-03-29 01:00 GMT -> 02:00 BST; 2026-10-25 02:00 BST -> 01:00 GMT."""
    app = app_in("Europe/London")
    skipped = crontab(minute=30, hour=1, app=app)
    got = runs(skipped, datetime(2026, 3, 28, 12, tzinfo=UTC), 2)
    assert local(got, LONDON) == ["03-29 02:00 BST", "03-30 01:30 BST"]
    every_15 = crontab(minute="*/15", app=app)
    got = runs(every_15, datetime(2026, 3, 29, 0, 50, tzinfo=UTC), 3)
    assert local(got, LONDON) == ["03-29 02:00 BST", "03-29 02:15 BST", "03-29 02:30 BST"]
    repeated = crontab(minute=30, hour=1, app=app)
    got = runs(repeated, datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert local(got, LONDON) == ["10-25 01:30 BST", "10-26 01:30 GMT"]
    hourly = crontab(minute=30, app=app)
    got = runs(hourly, datetime(2026, 10, 24, 23, 45, tzinfo=UTC), 3)  # 00:45 BST
    assert local(got, LONDON) == ["10-25 01:30 BST", "10-25 01:30 GMT", "10-25 02:30 GMT"]


def test_a_daily_job_is_24_hours_apart_except_across_a_change() -> None:
    cron = crontab(minute=0, hour=12, app=app_in("Europe/London"))
    got = runs(cron, datetime(2026, 3, 27, 0, tzinfo=UTC), 4)
    gaps = [(b - a) / timedelta(hours=1) for a, b in pairwise(got)]
    assert gaps == [24, 23, 24]
    assert all(t.astimezone(LONDON).hour == 12 for t in got)


# -- intervals, due runs, Celery's is_due ------------------------------------------------
def test_interval_runs_stay_on_the_grid_and_a_long_gap_gives_one_run() -> None:
    every = schedule(10)
    last = datetime(2026, 1, 1, tzinfo=UTC)
    assert every.next_run_after(last) == last + timedelta(seconds=10)
    assert every.latest_run(last, last + timedelta(seconds=9.9)) is None
    assert every.latest_run(last, last + timedelta(seconds=10)) == last + timedelta(seconds=10)
    assert every.latest_run(last, last + timedelta(hours=5, seconds=7)) == last + timedelta(hours=5)
    assert schedule(timedelta(minutes=1)).seconds == 60


def test_crontab_latest_run_is_the_newest_missed_one() -> None:
    cron = crontab(minute=0, hour="*/6", app=app_in(None))
    last = datetime(2026, 1, 1, tzinfo=UTC)
    assert cron.latest_run(last, last + timedelta(hours=5)) is None
    assert cron.latest_run(last, datetime(2026, 3, 10, 13, tzinfo=UTC)) == datetime(
        2026, 3, 10, 12, tzinfo=UTC)
    minutely = crontab(app=app_in(None))
    assert minutely.latest_run(datetime(2024, 1, 1, tzinfo=UTC), datetime(
        2026, 5, 5, 5, 5, 30, tzinfo=UTC)) == datetime(2026, 5, 5, 5, 5, tzinfo=UTC)


def test_is_due_and_remaining_estimate_mean_what_they_mean_in_celery() -> None:
    now = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
    every = schedule(60, nowfun=lambda: now, app=app_in(None))
    assert every.is_due(now - timedelta(seconds=20)) == schedstate(False, 40.0)
    assert every.is_due(now - timedelta(seconds=70)) == schedstate(True, 60.0)
    assert every.remaining_estimate(now - timedelta(seconds=20)) == timedelta(seconds=40)
    cron = crontab(minute="*/5", nowfun=lambda: now, app=app_in(None))
    assert cron.is_due(datetime(2026, 6, 1, 11, 58, tzinfo=UTC)) == schedstate(True, 270.0)
    assert cron.is_due(datetime(2026, 6, 1, 12, 0, tzinfo=UTC)) == schedstate(False, 270.0)
    naive = datetime(2026, 6, 1, 12, 0)  # naive: UTC, as Celery's maybe_make_aware
    assert cron.remaining_estimate(naive) == timedelta(seconds=270)


@pytest.mark.parametrize(("fields", "words"), [
    ({}, "every minute"),
    ({"minute": "*/15"}, "every 15 min"),
    ({"minute": 5}, "at minute 5 of every hour"),
    ({"minute": 30, "hour": 7, "day_of_week": "mon"}, "at 07:30 on Mon"),
    ({"minute": 0, "hour": "0,12"}, "at 00:00, 12:00"),
    ({"minute": "0,30", "hour": "*/2"}, "every 2 h at minute 0, 30"),
    ({"minute": "*/10", "hour": "9-17", "day_of_week": "mon-fri"},
     "every 10 min during hour 9-17 on Mon-Fri"),
    ({"minute": "7-9", "hour": "1-5,8"}, "at minute 7-9 of hour 1-5, 8"),
    ({"minute": 0, "hour": 0, "day_of_month": "1,15", "month_of_year": "jan-mar"},
     "at 00:00 on day 1, 15 of the month in Jan-Mar"),
])
def test_a_crontab_in_words(fields: dict[str, object], words: str) -> None:
    cron = crontab(**fields, app=app_in("Europe/London"))  # type: ignore[arg-type]
    assert cron.describe() == f"{words} (Europe/London)"


def test_an_interval_in_words_and_a_cron_line() -> None:
    assert schedule(30).describe() == "every 30 s"
    assert schedule(timedelta(hours=1, minutes=30)).describe() == "every 1 h 30 min"
    assert schedule(93784.25).describe() == "every 1 d 2 h 3 min 4.25 s"
    assert schedule(0.5).describe() == "every 0.5 s"
    assert crontab.from_string("*/15 3 1 jan sun").cron_line == "*/15 3 1 jan sun"
