"""What the Periodic page shows, read from the broker at each request: every beat entry
of the app, its last run (the broker's beat state, ``Broker.beat_runs``), its next run
(computed from its schedule and that last run, as every beat computes it:
:func:`celeriac.beat.service.plan_entry`), and the beats that run, from their own
heartbeats (:mod:`celeriac.beat.presence`).

Beats have no leader: each one holds the whole schedule and races the others for every
run, which the broker gives to one of them (a compare-and-set that publishes in the same
step). So "held by" lists every live beat that has the entry, and "sent by" names the
one that won its last run, when that beat still runs.

The entries are this dashboard's app's (``beat_schedule``, ``add_periodic_task``), as a
beat started from the same code reads them. An entry that a running beat holds and this
app does not know (the beat runs another version of the code) is listed too, with its
last run, so that nothing a beat sends is hidden. Two round trips, whatever the size of
the schedule: the heartbeats and one read of the last runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from celeriac.beat.entries import Entry, entries
from celeriac.beat.presence import beats
from celeriac.beat.service import plan_entry
from celeriac.exceptions import ConfigurationError
from celeriac.schedules import BaseSchedule, crontab

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.brokers.base import WorkerInfo


@dataclass(frozen=True)
class BeatRow:
    """A running beat, as its last heartbeat describes it."""

    name: str
    hostname: str
    pid: int | None
    #: The node of ``worker -B`` that runs it on a thread (None: ``celeriac beat``).
    worker: str | None
    heartbeat_age: float
    started: float | None
    entries: list[str] = field(default_factory=list)
    #: The runs it won: entry name -> scheduled time.
    sent: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EntryRow:
    name: str
    #: The entry as this app declares it (None: only a running beat knows it).
    entry: Entry | None
    #: The schedule in words (``every 30 s``, ``at 07:30 on Mon (UTC)``).
    schedule: str
    #: A crontab's five fields (None for other schedules).
    cron: str | None
    #: Unix time of the last run stored in the broker (None: no beat has seen it yet).
    last_run: float | None
    #: True when ``last_run`` is not a run but the time the first beat saw the entry (a
    #: crontab's stored time that is none of its times; see :func:`_seen_only`).
    seen_only: bool
    next_run: float | None
    #: True when its next run has come: the next look of any beat sends it.
    due: bool
    #: The live beats that hold it.
    held_by: list[str] = field(default_factory=list)
    #: The live beat that sent its last run (None: one no longer running, or no run yet).
    sent_by: str | None = None


@dataclass(frozen=True)
class PeriodicView:
    entries: list[EntryRow]
    beats: list[BeatRow]
    #: The zone crontabs are read in (the app's ``timezone``).
    timezone: str
    #: Why this app's schedule could not be read (a beat would refuse to start too).
    error: str | None = None


def read(app: Celeriac, call: Callable[..., Any]) -> PeriodicView:
    """The Periodic page of ``app``; ``call`` runs each broker call (the server's pool)."""
    now = time.time()
    error = None
    try:
        app.configured()  # on_after_configure receivers add their periodic tasks first
        known = entries(app)
    except ConfigurationError as exc:
        known, error = [], str(exc)
    running = sorted((_beat_row(record, now) for record in beats(call(app.broker.workers))),
                     key=lambda row: row.name)
    names = [entry.name for entry in known]
    others = sorted({name for row in running for name in row.entries} - set(names))
    runs: dict[str, float] = call(app.broker.beat_runs, names + others) if names or others else {}
    rows = [_entry_row(entry, runs.get(entry.name), now, running) for entry in known]
    rows += [_unknown_row(name, runs.get(name), running) for name in others]
    return PeriodicView(rows, running, str(app.conf.timezone or "UTC"), error)


def _beat_row(record: WorkerInfo, now: float) -> BeatRow:
    info = record.info
    sent = info.get("sent")
    return BeatRow(
        name=record.name, hostname=str(info.get("hostname") or "-"),
        pid=info.get("pid") if isinstance(info.get("pid"), int) else None,
        worker=str(info["worker"]) if info.get("worker") else None,
        heartbeat_age=max(0.0, now - record.last_seen),
        started=float(info["started"]) if isinstance(info.get("started"), int | float) else None,
        entries=[str(name) for name in info.get("entries") or []],
        sent={str(k): float(v) for k, v in sent.items()} if isinstance(sent, dict) else {})


def _holders(name: str, last: float | None, running: list[BeatRow]) -> tuple[list[str], str | None]:
    held = [row.name for row in running if name in row.entries]
    sent_by = next((row.name for row in running
                    if last is not None and row.sent.get(name) == last), None)
    return held, sent_by


def _entry_row(entry: Entry, last: float | None, now: float, running: list[BeatRow]) -> EntryRow:
    planned = plan_entry(entry, last, now)
    following = planned.next_run.timestamp()
    held, sent_by = _holders(entry.name, last, running)
    schedule = entry.schedule
    cron = schedule.cron_line if isinstance(schedule, crontab) else None
    return EntryRow(entry.name, entry, schedule.describe(), cron,
                    last, cron is not None and last is not None and _seen_only(schedule, last),
                    following, last is not None and planned.next_run <= _utc(now), held, sent_by)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _seen_only(schedule: BaseSchedule, last: float) -> bool:
    """The broker keeps one time per entry: its last run, or, before the first run, when
    the first beat saw it (its schedule counts from there). A crontab's runs fall on its
    own times, and a first sighting (``time.time()`` at a beat's look) practically never
    does: so a crontab entry whose stored time is none of its times has not run yet. An
    interval's runs count from the sighting, so there the two cannot be told apart (for
    one period at most)."""
    moment = _utc(last)
    return schedule.next_run_after(moment - timedelta(seconds=1)) != moment


def _unknown_row(name: str, last: float | None, running: list[BeatRow]) -> EntryRow:
    held, sent_by = _holders(name, last, running)
    return EntryRow(name, None, "-", None, last, False, None, False, held, sent_by)
