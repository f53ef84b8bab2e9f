"""Celery's schedules: ``schedule`` (an interval) and ``crontab``, for periodic tasks.

A schedule answers two questions about an entry: when does it run next after a given
run (:meth:`BaseSchedule.next_run_after`), and which run is due now after a given one
(:meth:`BaseSchedule.latest_run`: the newest scheduled time that has passed, so a beat
that was away sends a missed run once, not a burst). ``is_due`` and
``remaining_estimate`` keep Celery's meaning for code that calls them.

Times are aware datetimes; a naive one is taken as UTC, as Celery does
(``maybe_make_aware``). A crontab is read in the app's ``timezone`` (UTC when None),
across daylight-saving changes:

* a wall-clock time that does not exist (clocks go forward: 02:30 in New York on the
  March change) runs at the change itself (03:00 local), once however many of its
  minutes match, as cron does;
* a wall-clock time that happens twice (clocks go back) runs once, in the first pass,
  unless the crontab's hour is every hour (``hour='*'``): then it runs in both passes,
  since each is a real hour of its own (``minute=0`` keeps running hourly).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celeriac.exceptions import ConfigurationError

__all__ = ["BaseSchedule", "ParseException", "crontab", "crontab_parser", "maybe_schedule",
           "schedstate", "schedule", "zone"]

UTC = timezone.utc


class schedstate(NamedTuple):
    """Celery's ``(is_due, next)``: whether to run now, and seconds until the next look."""

    is_due: bool
    next: float


class ParseException(ConfigurationError):
    """A crontab field that cannot be read (Celery's ``celery.schedules.ParseException``)."""


def zone(name: str | tzinfo | None) -> tzinfo:
    """The time zone named ``name`` (an IANA name such as ``Europe/London``); None is UTC."""
    if name is None:
        return UTC
    if isinstance(name, tzinfo):
        return name
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {name!r}: give an IANA name such as "
                                 "'Europe/London' or 'UTC'") from exc


def aware(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken as UTC (Celery's ``naive_as_utc``)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class BaseSchedule(ABC):
    """What every schedule answers. ``nowfun`` replaces the clock (tests, Celery's
    argument); ``app`` gives the time zone (``timezone`` setting), else the current app."""

    def __init__(self, nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        self.nowfun = nowfun
        self._app = app

    @property
    def app(self) -> Any:
        if self._app is not None:
            return self._app
        from celeriac._state import get_current_app

        return get_current_app()

    @app.setter
    def app(self, value: Any) -> None:
        self._app = value

    @property
    def tz(self) -> tzinfo:
        """The zone the schedule is read in: the app's ``timezone`` (UTC when None)."""
        return zone(self.app.conf.timezone)

    def now(self) -> datetime:
        """The current time, aware, in the schedule's zone."""
        return aware(self.nowfun() if self.nowfun else datetime.now(UTC)).astimezone(self.tz)

    @abstractmethod
    def next_run_after(self, after: datetime) -> datetime:
        """The first scheduled time strictly after ``after`` (aware, UTC)."""

    def describe(self) -> str:
        """The schedule in words, for people (the dashboard's Periodic page); a schedule
        class of one's own that does not say more shows as its repr."""
        return repr(self)

    def latest_run(self, last: datetime, now: datetime) -> datetime | None:
        """The newest scheduled time in ``(last, now]``, or None when none has come.

        A beat that finds several runs passed since ``last`` sends this one only: a
        missed run is sent once, not in a burst. Runs are searched in widening windows
        before ``now`` so that a minutely crontab a year behind costs a few steps.
        """
        last, now = aware(last), aware(now)
        first = self.next_run_after(last)
        if first > now:
            return None
        for window in (timedelta(hours=2), timedelta(days=2), timedelta(days=62),
                       timedelta(days=800)):
            start = max(last, now - window)
            found = self._last_from(start, now)
            if found is not None:
                return found
        return self._last_from(first - timedelta(microseconds=1), now)

    def _last_from(self, start: datetime, now: datetime) -> datetime | None:
        found = None
        run = self.next_run_after(start)
        while run <= now:
            found = run
            run = self.next_run_after(run)
        return found

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time from now until the run after ``last_run_at`` (negative when overdue)."""
        return self.next_run_after(last_run_at) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Celery's ``(is_due, next)``: due when the run after ``last_run_at`` has come;
        ``next`` is the seconds until the run after that one (when due) or until it."""
        now = self.now()
        remaining = (self.next_run_after(last_run_at) - now).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        return schedstate(True, max((self.next_run_after(now) - now).total_seconds(), 0.0))


class schedule(BaseSchedule):
    """Every ``run_every`` (seconds or a ``timedelta``) after the last run.

    ``relative`` is Celery's rounding of the period to the clock; accepted and ignored
    (celeriac keeps runs on the grid of the first one, see ``latest_run``).
    """

    def __init__(self, run_every: float | timedelta, relative: bool = False,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        super().__init__(nowfun, app)
        self.run_every = run_every if isinstance(run_every, timedelta) else _seconds(run_every)
        if self.run_every <= timedelta(0):
            raise ConfigurationError(f"schedule(run_every={run_every!r}): must be > 0 seconds")
        self.relative = relative

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    def next_run_after(self, after: datetime) -> datetime:
        return aware(after) + self.run_every

    def latest_run(self, last: datetime, now: datetime) -> datetime | None:
        """``last`` plus the most whole periods that fit before ``now``: runs stay on the
        grid of the first one (every beat computes the same times), and a gap of many
        periods gives one run."""
        last, now = aware(last), aware(now)
        periods = (now - last) // self.run_every
        return last + periods * self.run_every if periods >= 1 else None

    def describe(self) -> str:
        """``every 30 s``, ``every 1 h 30 min``."""
        return f"every {_duration(self.seconds)}"

    def __repr__(self) -> str:
        return f"<freq: {self.seconds:g}s>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every
        return self.run_every == other

    def __hash__(self) -> int:
        return hash(self.run_every)


def _seconds(value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"a schedule needs seconds (a number) or a timedelta, got {value!r}")
    return timedelta(seconds=value)


_WEEKDAYS = {name: number for number, name in enumerate(
    ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_WEEKDAYS.update({name: _WEEKDAYS[name[:3]] for name in (
    "sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")})
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_DAYS_IN_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
                  11: 30, 12: 31}
_PART = re.compile(r"^(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\w*))?$")


class crontab_parser:
    """Celery's crontab field syntax: ``*``, ``n``, ``a-b`` (wrapping past the end, as
    ``fri-mon``), ``*/step``, ``a-b/step``, lists of them with commas; day and month
    names. ``crontab_parser(60).parse('*/15') == {0, 15, 30, 45}``."""

    ParseException = ParseException

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_ = max_
        self.min_ = min_

    def parse(self, spec: str) -> set[int]:
        values: set[int] = set()
        for part in spec.split(","):
            values |= set(self._part(part.strip()))
        return values

    def _part(self, part: str) -> list[int]:
        match = _PART.match(part)
        if match is None:
            raise ParseException(f"cannot read crontab field {part!r}")
        star, low, high, step = match.groups()
        if star:
            values = list(range(self.min_, self.min_ + self.max_))
        else:
            start = self._number(low)
            end = self._number(high) if high else start
            values = (list(range(start, end + 1)) if end >= start else
                      list(range(start, self.min_ + self.max_)) + list(range(self.min_, end + 1)))
        if step is not None:
            if not step.isdigit() or int(step) < 1:
                raise ParseException(f"crontab field {part!r}: the step must be a number >= 1")
            values = values[::int(step)]
        return values

    def _number(self, text: str) -> int:
        lowered = text.lower()
        if text.isdigit():
            number = int(text)
        elif lowered in _MONTHS and self.min_ == 1 and self.max_ == 12:
            number = _MONTHS[lowered]
        elif lowered in _WEEKDAYS and self.max_ == 7:
            number = _WEEKDAYS[lowered]
        else:
            raise ParseException(f"crontab value {text!r} is not a number or a name here")
        if self.max_ == 7 and number == 7:
            number = 0  # cron's Sunday as 7
        if not self.min_ <= number < self.min_ + self.max_:
            raise ParseException(f"crontab value {number} is outside "
                                 f"{self.min_}-{self.min_ + self.max_ - 1}")
        return number


Cronspec = int | str | Iterable[int]


def _expand(spec: Cronspec, max_: int, min_: int = 0) -> frozenset[int]:
    if isinstance(spec, bool):
        raise ParseException(f"crontab field {spec!r}: give a number, a pattern or numbers")
    if isinstance(spec, int):
        return frozenset(crontab_parser(max_, min_).parse(str(spec)))
    if isinstance(spec, str):
        return frozenset(crontab_parser(max_, min_).parse(spec))
    values: set[int] = set()
    for item in spec:
        values |= _expand(item, max_, min_)
    if not values:
        raise ParseException("crontab field: an empty list never runs")
    return frozenset(values)


class crontab(BaseSchedule):
    """Run at the minutes, hours, days and months given, in the app's ``timezone``.

    Fields as Celery's (and cron's): numbers, patterns (``'*/15'``, ``'8-17'``,
    ``'mon-fri'``, ``'1,15'``) or iterables of numbers. ``day_of_week`` counts from
    Sunday = 0. A day runs when it matches ``day_of_week``, ``day_of_month`` and
    ``month_of_year`` all three (Celery's rule, not cron's either-day rule).
    """

    def __init__(self, minute: Cronspec = "*", hour: Cronspec = "*", day_of_week: Cronspec = "*",
                 day_of_month: Cronspec = "*", month_of_year: Cronspec = "*",
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        super().__init__(nowfun, app)
        self._orig = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minute = _expand(minute, 60)
        self.hour = _expand(hour, 24)
        self.day_of_week = _expand(day_of_week, 7)
        self.day_of_month = _expand(day_of_month, 31, 1)
        self.month_of_year = _expand(month_of_year, 12, 1)
        if not any(day <= _DAYS_IN_MONTH[month] for month in self.month_of_year
                   for day in self.day_of_month):
            raise ConfigurationError(f"crontab(day_of_month={day_of_month!r}, month_of_year="
                                     f"{month_of_year!r}) names no day that exists: it would never run")
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)

    @classmethod
    def from_string(cls, line: str) -> crontab:
        """A crontab from cron's five fields: ``'minute hour day_of_month month day_of_week'``."""
        fields = line.split()
        if len(fields) != 5:
            raise ParseException(f"cron line {line!r}: needs five fields")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def _day_matches(self, day: date) -> bool:
        return (day.month in self.month_of_year and day.day in self.day_of_month
                and day.isoweekday() % 7 in self.day_of_week)

    def _walls(self, start: datetime) -> Iterator[datetime]:
        """Matching wall-clock (naive) minutes at or after ``start``, in order."""
        day = start.date()
        for _ in range(366 * 30):  # a matching day exists within 28 years (Feb 29 + weekday)
            if self._day_matches(day):
                for hour in self._hours:
                    for minute in self._minutes:
                        wall = datetime(day.year, day.month, day.day, hour, minute)
                        if wall >= start:
                            yield wall
            day += timedelta(days=1)

    def _instants(self, wall: datetime, tz: tzinfo) -> list[datetime]:
        """The real times a wall-clock minute stands for (see the module docstring)."""
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(tz).replace(tzinfo=None) == wall:  # it happens twice
            return [first, second] if len(self.hour) == 24 else [first]
        return [_transition(second, first, tz)]  # in a gap: the change itself

    def next_run_after(self, after: datetime) -> datetime:
        tz = self.tz
        after = aware(after)
        margin = timedelta(hours=3)  # more than any daylight-saving shift
        steady = _offset(after - margin, tz) == _offset(after + margin, tz)
        wall = after.astimezone(tz).replace(tzinfo=None)
        start = wall if steady else wall - margin
        start = start.replace(second=0, microsecond=0)
        best: datetime | None = None
        for candidate in self._walls(start):
            if best is not None and (steady or candidate > wall + margin):
                break
            for instant in self._instants(candidate, tz):
                if instant > after and (best is None or instant < best):
                    best = instant
        if best is None:
            raise ConfigurationError(f"{self!r} has no run in the next 30 years")
        return best

    @property
    def cron_line(self) -> str:
        """The five fields as a cron line reads them: minute, hour, day of month, month,
        day of week."""
        minute, hour, dow, dom, moy = (_text(part) for part in self._orig)
        return f"{minute} {hour} {dom} {moy} {dow}"

    def describe(self) -> str:
        """``every 15 min``, ``at 07:30 on Mon``, ``at 00:00 on day 1 of the month in
        Jan``..., then the zone it is read in: ``(Europe/London)``."""
        days = " ".join(part for part in (
            "" if len(self.day_of_week) == 7 else "on " + _ranges(self.day_of_week, _DAY_NAMES),
            "" if len(self.day_of_month) == 31 else
            f"on day {_ranges(self.day_of_month)} of the month",
            "" if len(self.month_of_year) == 12 else "in " + _ranges(self.month_of_year,
                                                                      _MONTH_NAMES)) if part)
        return " ".join(part for part in (self._describe_times(), days, f"({self.tz})") if part)

    def _describe_times(self) -> str:
        minutes, hours = self._minutes, self._hours
        every_hour = len(hours) == 24
        step = _step(minutes, 60)
        often = "every minute" if step == 1 else f"every {step} min"
        if every_hour and step is not None:
            return often
        if every_hour and len(minutes) == 1:
            return f"at minute {minutes[0]} of every hour"
        if len(hours) * len(minutes) <= 6:
            return "at " + ", ".join(f"{h:02d}:{m:02d}" for h in hours for m in minutes)
        hour_step = _step(hours, 24)
        if hour_step is not None:
            return f"every {hour_step} h at minute {_ranges(minutes)}"
        if step is not None:
            return f"{often} during hour {_ranges(hours)}"
        return f"at minute {_ranges(minutes)} of hour {_ranges(hours)}"

    def __repr__(self) -> str:
        return f"<crontab: {self.cron_line} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, crontab):
            return NotImplemented
        return (self.minute, self.hour, self.day_of_week, self.day_of_month,
                self.month_of_year) == (other.minute, other.hour, other.day_of_week,
                                        other.day_of_month, other.month_of_year)

    def __hash__(self) -> int:
        return hash((self.minute, self.hour, self.day_of_week, self.day_of_month,
                     self.month_of_year))


_DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MONTH_NAMES = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                "Nov", "Dec")


def _duration(seconds: float) -> str:
    """``90`` -> ``1 min 30 s``; ``86400`` -> ``1 d``; ``0.5`` -> ``0.5 s``."""
    parts = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count:g} {unit}")
    if rest or not parts:
        parts.append(f"{round(rest, 3):g} s")
    return " ".join(parts)


def _step(values: list[int], size: int) -> int | None:
    """The step when ``values`` are 0, s, 2s... through the whole range (``*/s``), else None."""
    if len(values) < 2:
        return None
    step = values[1] - values[0]
    return step if values == list(range(0, size, step)) else None


def _ranges(values: Iterable[int], names: tuple[str, ...] = ()) -> str:
    """``{1, 2, 3, 5}`` -> ``1-3, 5`` (with ``names``: ``Mon-Wed, Fri``)."""
    ordered = sorted(values)
    show = (lambda n: names[n]) if names else str
    runs: list[list[int]] = []
    for value in ordered:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(show(run[0]) if len(run) == 1 else
                     f"{show(run[0])}{', ' if len(run) == 2 else '-'}{show(run[-1])}" for run in runs)


def _text(part: Cronspec) -> str:
    if isinstance(part, int | str):
        return str(part)
    return ",".join(str(item) for item in part)


def _offset(instant: datetime, tz: tzinfo) -> timedelta | None:
    """``tz``'s UTC offset at an aware instant (``tz.utcoffset`` would read it as wall time)."""
    return instant.astimezone(tz).utcoffset()


def _transition(before: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The instant in ``(before, after]`` where ``tz``'s offset changes (to the second)."""
    low, high = int(before.timestamp()), int(after.timestamp())
    offset = _offset(before, tz)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, UTC), tz) == offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def maybe_schedule(value: Any, relative: bool = False, app: Any = None) -> BaseSchedule:
    """A schedule from what ``beat_schedule`` takes: a number of seconds, a ``timedelta``,
    or a schedule (Celery's ``maybe_schedule``)."""
    if isinstance(value, BaseSchedule):
        if app is not None:
            value.app = app
        return value
    if isinstance(value, timedelta) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return schedule(value, relative, app=app)
    raise ConfigurationError(f"a periodic task's schedule must be seconds, a timedelta, "
                             f"schedule(...) or crontab(...), got {value!r}")
