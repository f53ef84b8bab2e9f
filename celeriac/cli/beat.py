"""``celeriac beat``: the periodic task scheduler (:mod:`celeriac.beat`), and ``--list``.

Celery's beat flags are accepted: ``-s/--schedule`` names Celery's state file, which
celeriac does not use (the state lives in the broker, so it is logged and ignored);
``-S/--scheduler`` takes only Celery's default scheduler (or ``celeriac.beat:Beat``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from celeriac.cli.events import AppCommand

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.beat import Beat

log = logging.getLogger("celeriac.beat")

#: Seconds a stopping ``worker -B`` waits for its beat thread (removing its heartbeat).
EMBEDDED_STOP_WAIT = 5.0


def note_unused_state_file(schedule_file: str | None) -> None:
    """``-s/--schedule``: said once in the log, as it has no effect here."""
    if schedule_file:
        log.info("--schedule %s: not used: celeriac keeps each periodic task's last run in "
                 "the broker, shared by every beat", schedule_file)


def start_embedded(app: Celeriac, *, max_interval: float | None, scheduler: str | None,
                   schedule_file: str | None, worker: str | None = None) -> Callable[[], None]:
    """``worker -B``: a beat on a thread of the supervisor process of node ``worker``.
    Returns what stops it: it waits (a few seconds at most) for the beat to remove its
    heartbeat, so the beat does not outlive its worker on the dashboard."""
    from celeriac import signals
    from celeriac.beat.service import run_in_thread

    if scheduler:
        app.conf.beat_scheduler = scheduler
    note_unused_state_file(schedule_file)
    thread, stop = run_in_thread(app, max_interval=max_interval, worker=worker)
    signals.beat_embedded_init.send(sender=thread)

    def stop_beat() -> None:
        stop.set()
        thread.join(EMBEDDED_STOP_WAIT)

    return stop_beat


def print_plan(beat: Beat) -> None:
    """``--list``: one line per entry: name, task, schedule, last run, next run."""
    zone = beat.app.conf.timezone
    plan = beat.plan()
    if not plan:
        click.echo("no periodic tasks (beat_schedule is empty and nothing was added with "
                   "add_periodic_task)")
    for planned in plan:
        entry = planned.entry
        last = "never" if planned.last_run is None else _local(planned.last_run, zone)
        click.echo(f"{entry.name}  task={entry.task}  schedule={entry.schedule!r}  "
                   f"last={last}  next={_local(planned.next_run, zone)}")


def _local(moment: datetime, zone: str | None) -> str:
    from celeriac.schedules import zone as tz

    return moment.astimezone(tz(zone) if zone else timezone.utc).isoformat(timespec="seconds")


def beat_command(app_command: AppCommand) -> click.Command:
    """The ``beat`` command; ``app_command`` loads the ``-A`` app (``celeriac.cli.main``)."""
    from celeriac.cli.main import LOG_LEVELS, _child_app_spec, _log_level, _pidfile

    @click.command("beat")
    @click.option("--list", "list_only", is_flag=True,
                  help="Print every periodic task with its last and next run, and exit.")
    @click.option("--max-interval", type=click.FloatRange(min=0, min_open=True),
                  help="Longest sleep between two looks at the schedule, seconds "
                       "[default: beat_max_loop_interval].")
    @click.option("-s", "--schedule", "schedule_file", metavar="PATH",
                  help="Celery's state file: accepted and unused (the state is in the broker).")
    @click.option("-S", "--scheduler", help="Only Celery's default scheduler (or celeriac.beat:Beat).")
    @click.option("-l", "--loglevel", default="INFO", show_default=True, callback=_log_level,
                  type=click.Choice(list(LOG_LEVELS), case_sensitive=False))
    @click.option("-f", "--logfile", metavar="PATH", help="Log here instead of stderr.")
    @click.option("--pidfile", metavar="PATH",
                  help="Write the beat's pid here (removed on exit); refuse to start if it "
                       "names a running process.")
    @click.option("-D", "--detach", is_flag=True,
                  help="Run in the background (a daemon); returns once it holds --pidfile.")
    @click.option("--uid", metavar="USER", help="Run as this user (name or id); needs root.")
    @click.option("--gid", metavar="GROUP", help="Run as this group (name or id); needs root.")
    @click.option("--umask", metavar="MASK", help="File mode creation mask (0022: octal).")
    @click.option("--executable", metavar="PATH",
                  help="The Python a detached beat runs under [default: this one].")
    @app_command
    def beat(app: Celeriac, list_only: bool, max_interval: float | None,
             schedule_file: str | None, scheduler: str | None, loglevel: str,
             logfile: str | None, pidfile: str | None, detach: bool, uid: str | None,
             gid: str | None, umask: str | None, executable: str | None) -> None:
        """Send the app's periodic tasks (beat_schedule, add_periodic_task) when due: each
        run once however many beats run against the broker."""
        from celeriac import signals
        from celeriac.beat import Beat
        from celeriac.worker import daemon
        from celeriac.worker.logs import configure_logging

        if scheduler:
            app.conf.beat_scheduler = scheduler
        app.finalize()
        if list_only:
            print_plan(Beat(app, max_interval=max_interval))
            return
        if not app.broker.shared_between_processes:
            log.warning("broker %s lives inside this process: only its tasks see what this "
                        "beat sends", app.conf.broker_url)
        daemon.start(detach=detach, user=uid, group=gid, umask=umask, executable=executable,
                     argv=lambda: ["-A", _child_app_spec(app),
                                   *click.get_current_context().obj.get("argv", sys.argv[1:])])
        configure_logging(app.conf, loglevel, logfile)
        note_unused_state_file(schedule_file)
        app.broker.ping()
        runner = Beat(app, max_interval=max_interval)
        with _pidfile(pidfile, "beat"):
            daemon.ready(logfile)
            stop = threading.Event()

            def on_signal(signum: int, frame: FrameType | None) -> Any:
                log.info("beat: %s: stopping", signal.Signals(signum).name)
                stop.set()

            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(signum, on_signal)
            signals.beat_init.send(sender=runner)
            runner.run(stop)

    return beat
