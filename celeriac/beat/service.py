"""The beat: sends each due run of the app's periodic tasks, exactly once per cluster.

Every beat process looks at the schedule and races for each due run through the
broker's :meth:`~celeriac.brokers.base.Broker.beat_claim`: a compare-and-set on the
entry's last run, stored in the broker, that publishes the run's message in the same
atomic step. So however many beats run (one per machine, a spare, ``worker -B`` on
every node), each run is sent once; there is no leader to elect and no takeover delay:
when one beat dies the others, awake for the same run, send it. A crash between
claiming and publishing cannot happen, since they are one step.

Each running beat also writes a heartbeat of its own (:mod:`celeriac.beat.presence`),
so the dashboard and ``celeriac status`` can say which beats hold the schedule.

The last run of each entry lives in the broker, so a restarted beat neither repeats a
run nor skips one. A run missed while no beat was alive is sent once, when a beat
comes back (the newest missed run: no burst of catch-up runs); a crontab run missed by
more than ``beat_cron_starting_deadline`` seconds is skipped instead. An entry no beat
has seen yet starts counting when the first beat sees it, as in Celery (an interval
entry runs one period later, a crontab at its next time).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celeriac.beat.entries import Entry, entries
from celeriac.beat.presence import Presence
from celeriac.brokers.base import OutgoingMessage
from celeriac.exceptions import CeleriacError, ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.message import Envelope

log = logging.getLogger("celeriac.beat")

#: Task ids of beat runs are uuid5(name and run time) in this namespace: the same run
#: gets the same id on every beat (a second send of it could not even make a second result).
RUN_NAMESPACE = uuid.UUID("6f1d2b9e-3c55-4f0e-9b7e-2c1a8d2f0b11")
#: The headers every beat message carries: its entry's name and its scheduled time
#: (Unix seconds), for the task (``self.request.headers``) and for operators.
ENTRY_HEADER = "beat_entry"
RUN_AT_HEADER = "beat_run_at"
#: Seconds a beat waits before looking again after the broker failed.
RETRY_AFTER = 1.0
UTC = timezone.utc


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class Planned:
    """One entry as ``celeriac beat --list`` shows it."""

    entry: Entry
    #: Its last run stored in the broker (None: no beat has seen it yet).
    last_run: datetime | None
    next_run: datetime


class Beat:
    """Sends the app's periodic tasks; run as many as you like against one broker."""

    def __init__(self, app: Celeriac, *, max_interval: float | None = None,
                 name: str | None = None, worker: str | None = None) -> None:
        app.configured()  # on_after_configure receivers add their periodic tasks first
        self.app = app
        self.max_interval = float(max_interval or app.conf.beat_max_loop_interval)
        self.entries = entries(app)
        names = [entry.name for entry in self.entries]
        #: This beat's heartbeat (``name``: its record's, default ``beat.PID@HOST``;
        #: ``worker``: the node of ``worker -B``), written while :meth:`run` runs.
        self.presence = Presence(app, names, name=name, worker=worker,
                                 max_interval=self.max_interval)
        #: Entries whose message could not be built or sent at the last try (logged once).
        self._failing: set[str] = set()
        for entry in self.entries:  # a bad argument or option stops the start, not a run
            try:
                self._check(entry)
            except (TypeError, ValueError, CeleriacError) as exc:
                raise ConfigurationError(f"periodic task {entry.name!r}: {exc}") from exc
        log.debug("beat: %d entries: %s", len(names), ", ".join(names))

    # -- one look at the schedule -------------------------------------------------------
    def tick(self, now: float | None = None) -> float:
        """Claim and send every due run; return the seconds until the next look."""
        now = time.time() if now is None else now
        runs = self.app.broker.beat_runs([entry.name for entry in self.entries])
        wake = now + self.max_interval
        for entry in self.entries:
            next_at = self._visit(entry, runs.get(entry.name), now)
            wake = min(wake, next_at)
        return max(wake - time.time(), 0.0)

    def _visit(self, entry: Entry, last: float | None, now: float) -> float:
        """Send ``entry``'s due run if there is one; return when it runs next."""
        schedule = entry.schedule
        if last is None:  # no beat has seen it: it starts counting now (Celery's start)
            self.app.broker.beat_claim(entry.name, None, now, [])
            return schedule.next_run_after(_at(now)).timestamp()
        run = schedule.latest_run(_at(last), _at(now))
        if run is None:
            return schedule.next_run_after(_at(last)).timestamp()
        run_at = run.timestamp()
        deadline = self.app.conf.beat_cron_starting_deadline
        if entry.is_crontab and deadline is not None and run_at < now - deadline:
            if self.app.broker.beat_claim(entry.name, last, run_at, []):
                log.warning("beat: %s: its run of %s is more than %gs late "
                            "(beat_cron_starting_deadline): skipped", entry.name,
                            run.isoformat(), deadline)
            return schedule.next_run_after(run).timestamp()
        if not self._send(entry, last, run_at, now):
            return now + RETRY_AFTER
        return schedule.next_run_after(run).timestamp()

    def _send(self, entry: Entry, last: float, run_at: float, now: float) -> bool:
        """Race for the run; False when it could not be sent (tried again shortly)."""
        try:
            message, envelope = self._message(entry, run_at, now)
            sent = self.app.broker.beat_claim(entry.name, last, run_at, [message])
        except CeleriacError as exc:
            (log.debug if entry.name in self._failing else log.error)(
                "beat: %s: could not send its run of %s: %s (trying again)",
                entry.name, _at(run_at).isoformat(), exc)
            self._failing.add(entry.name)
            return False
        self._failing.discard(entry.name)
        if sent:
            self.presence.ran(entry.name, run_at)
            log.info("Scheduler: Sending due task %s (%s) for %s", entry.name, entry.task,
                     _at(run_at).isoformat())
            pipeline = self.app.middleware
            if pipeline.publish_watched():
                pipeline.after_publish(self.app, [envelope])
        else:
            log.debug("beat: %s: its run of %s was sent by another beat", entry.name,
                      _at(run_at).isoformat())
        return True

    def _check(self, entry: Entry) -> None:
        """Route and encode one message of ``entry`` as a run would, sending nothing and
        running no publish hooks (``before_task_publish`` receivers see real sends only)."""
        sig = self.app.signature(entry.task, entry.args, entry.kwargs, **entry.options)
        self.app._prepare(entry.task, sig.args, sig.kwargs, time.time(), watched=False,
                          **sig.resolved_options())

    def _message(self, entry: Entry, run_at: float, now: float) -> tuple[OutgoingMessage, Envelope]:
        """The run's message: the task's own options under the entry's, a task id
        derived from the entry and run, and the run's headers."""
        sig = self.app.signature(entry.task, entry.args, entry.kwargs, **entry.options)
        task_id = str(uuid.uuid5(RUN_NAMESPACE, f"{entry.name}\0{run_at!r}"))
        options: dict[str, Any] = {**sig.resolved_options(), "task_id": task_id}
        _, message, envelope = self.app._prepare(
            entry.task, sig.args, sig.kwargs, now, watched=True, **options)
        assert envelope is not None  # watched=True
        envelope.headers[ENTRY_HEADER] = entry.name
        envelope.headers[RUN_AT_HEADER] = run_at
        return replace(message, body=envelope.dumps()), envelope

    # -- running ----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; a broker that fails is tried again after a second.
        The beat's heartbeat is written meanwhile, and removed when it stops."""
        log.info("beat: %d periodic task(s), state in the broker %s, checking at least every "
                 "%gs, heartbeat as %s", len(self.entries), self.app.conf.broker_url,
                 self.max_interval, self.presence.name)
        try:
            self._loop(stop)
        finally:
            self.presence.forget()

    def _loop(self, stop: threading.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                delay = self.tick()
            except CeleriacError as exc:  # said once per outage, not once a second
                (log.debug if failing else log.warning)(
                    "beat: cannot read the schedule's state: %s (trying again every %gs)",
                    exc, RETRY_AFTER)
                failing, delay = True, RETRY_AFTER
            else:
                if failing:
                    log.info("beat: the broker answers again")
                failing = False
            self.presence.beat()
            stop.wait(min(delay, self.presence.due_in()))

    def plan(self, now: float | None = None) -> list[Planned]:
        """Every entry with its stored last run and its next run (``beat --list``)."""
        now = time.time() if now is None else now
        runs = self.app.broker.beat_runs([entry.name for entry in self.entries])
        return [plan_entry(entry, runs.get(entry.name), now) for entry in self.entries]


def plan_entry(entry: Entry, last: float | None, now: float) -> Planned:
    """``entry`` with its last run (as stored in the broker) and its next one: from the
    last run (from ``now`` when no beat has seen it yet); ``now`` when it is due (the
    next look of any beat sends it)."""
    following = entry.schedule.next_run_after(_at(now if last is None else last))
    if last is not None and following.timestamp() <= now:
        following = _at(now)
    return Planned(entry, None if last is None else _at(last), following)


def run_in_thread(app: Celeriac, *, max_interval: float | None = None,
                  worker: str | None = None) -> tuple[threading.Thread, threading.Event]:
    """A beat on a daemon thread of this process (``worker -B``, of node ``worker``); set
    the event to stop it."""
    beat = Beat(app, max_interval=max_interval, worker=worker)
    stop = threading.Event()
    thread = threading.Thread(target=beat.run, args=(stop,), name="celeriac-beat", daemon=True)
    thread.start()
    return thread, stop
