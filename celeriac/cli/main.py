"""``celeriac``: worker, call, result, status, beat (:mod:`celeriac.cli.beat`), events
(:mod:`celeriac.cli.events`), inspect and control (:mod:`celeriac.cli.control`), purge, dead and
queue pause/resume (:mod:`celeriac.cli.queues`).

Every command takes the app with ``-A``. Errors celeriac raises on purpose are
printed as one line and exit with status 1; click reports a wrong flag itself
(status 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from celeriac import __version__, serialization
from celeriac.cli.lazy import LazyGroup
from celeriac.exceptions import CeleriacError, ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import ResultRecord
    from celeriac.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

#: Subcommands in modules of their own, imported when used (:mod:`celeriac.cli.lazy`).
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "beat": ("celeriac.cli.beat", "beat_command"),
    "dashboard": ("celeriac.cli.dashboard", "dashboard_command"),
    "events": ("celeriac.cli.events", "events_command"),
    "metrics": ("celeriac.cli.metrics", "metrics_command"),
    "tasks": ("celeriac.cli.tasks", "tasks_command"),
    "inspect": ("celeriac.cli.control", "control_commands"),
    "control": ("celeriac.cli.control", "control_commands"),
    "report": ("celeriac.cli.report", "report_commands"),
    "shell": ("celeriac.cli.report", "report_commands"),
    "queue": ("celeriac.cli.queues", "queue_commands"),
    "dead": ("celeriac.cli.queues", "queue_commands"),
}


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except CeleriacError as exc:
        raise click.ClickException(str(exc)) from None


def _app_command(fn: F) -> F:
    """Load the ``-A`` app and turn celeriac errors into one-line messages."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        spec: str | None = ctx.obj.get("app_spec")
        with _errors():
            if ctx.obj.get("app") is None:
                if not spec:
                    raise ConfigurationError("no app given: use -A MODULE[:ATTRIBUTE]")
                from celeriac.contrib.django.fixup import setup_before_app
                from celeriac.loader import load_app

                setup_before_app()  # DJANGO_SETTINGS_MODULE set: django.setup() before the app
                ctx.obj["app"] = app = load_app(spec)
                # The app named by -A is the one current_app and shared tasks use here,
                # whichever apps its modules created (Celery's worker does the same).
                app.set_current()
                app.set_default()
            return fn(ctx.obj["app"], *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS, app_command=_app_command,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]",
              help="The app: a module (its 'app'), module:attribute or a file.py.")
@click.option("--workdir", metavar="DIR", is_eager=True, expose_value=False,
              callback=lambda ctx, param, value: _workdir(value),
              help="Change to this directory before loading the app.")
@click.version_option(__version__, prog_name="celeriac")
@click.pass_context
def cli(ctx: click.Context, app_spec: str | None) -> None:
    """celeriac: a distributed task queue built around green threads."""
    ctx.ensure_object(dict)
    ctx.obj.setdefault("app_spec", app_spec)


def _workdir(path: str | None) -> None:
    """``--workdir``: as Celery's, before the app is loaded (see worker/daemon.py)."""
    from celeriac.worker.daemon import change_directory

    if path:
        with _errors():
            change_directory(path)


def _split_queues(value: str | None) -> list[str]:
    return [q.strip() for q in (value or "").split(",") if q.strip()]


#: ``-l`` names, as Celery's (case-insensitive), plus ``WARN``; each maps to logging's name.
LOG_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "WARN": "WARNING",
              "ERROR": "ERROR", "CRITICAL": "CRITICAL", "FATAL": "CRITICAL"}


def _log_level(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return LOG_LEVELS[value.upper()]


@cli.command()
@click.option("-P", "--pool", "pools", multiple=True, metavar="NAME[:C[:QUEUES]]",
              help="Execution pool: solo, threads, prefork, gevent, eventlet, asyncio [default: "
                   "worker_pool]. Repeat to run several, e.g. -P gevent:1000:io -P prefork:2:cpu.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Tasks at once (prefork: processes) [default: CPUs].")
@click.option("--processes", type=click.IntRange(min=1),
              help="Worker processes for pools that run many tasks per process.")
@click.option("--autoscale", metavar="MAX,MIN",
              help="Grow the pool up to MAX tasks at once with the load, shrink it back to MIN "
                   "when idle (Celery's meaning; -c is then not used).")
@click.option("-Q", "--queues", help="Comma-separated queues to consume [default: default queue].")
@click.option("-X", "--exclude-queues", metavar="QUEUES",
              help="Comma-separated queues not to consume, of those the worker would.")
@click.option("-l", "--loglevel", default="INFO", show_default=True, callback=_log_level,
              type=click.Choice(list(LOG_LEVELS), case_sensitive=False))
@click.option("-f", "--logfile", metavar="PATH",
              help="Log here instead of stderr (supervisor and worker processes). Expands %n "
                   "(node's name), %h (its host), %d, %p (node name), %i (process index), %I.")
@click.option("--pidfile", metavar="PATH",
              help="Write the supervisor's pid here (removed on exit); refuse to start if it "
                   "names a running process. Expands as --logfile.")
@click.option("-n", "--hostname", "node", help="Node name [default: celeriac.PID@HOST].")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1),
              help="Messages reserved per concurrency slot.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True),
              help="Hard time limit per task, seconds.")
@click.option("--soft-time-limit", type=click.FloatRange(min=0, min_open=True),
              help="Soft time limit per task, seconds.")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1),
              help="Replace a worker process after this many tasks.")
@click.option("--max-memory-per-child", type=click.IntRange(min=1),
              help="Replace a worker process above this resident memory (KiB).")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0),
              help="Seconds running tasks get on a warm shutdown.")
@click.option("--max-blocking-time", type=click.FloatRange(min=0, min_open=True),
              help="Report a task that blocks an event loop (a green hub, an asyncio "
                   "loop) this long (s).")
@click.option("-E", "--task-events", "--events", is_flag=True,
              help="Record task events for 'celeriac events' and dashboards "
                   "[default: worker_send_task_events].")
@click.option("--without-heartbeat", is_flag=True,
              help="No worker-heartbeat events or heartbeat_sent signals (the node's liveness "
                   "record in the broker stays).")
@click.option("--without-gossip", is_flag=True, help="Accepted: celeriac has no gossip.")
@click.option("--without-mingle", is_flag=True, help="Accepted: celeriac has no mingle.")
@click.option("-O", "--optimization", type=click.Choice(["default", "fair"]),
              help="Accepted: celeriac's dispatch is always fair.")
@click.option("-B", "--beat", is_flag=True,
              help="Also run a beat (periodic tasks) on a thread of the supervisor; safe on "
                   "every node: each run is sent once.")
@click.option("-s", "--schedule-filename", "--schedule", "schedule_file", metavar="PATH",
              help="With -B: Celery's beat state file, accepted and unused (state is in the broker).")
@click.option("--scheduler", metavar="CLASS",
              help="With -B: only Celery's default scheduler (or celeriac.beat:Beat).")
@click.option("-D", "--detach", is_flag=True,
              help="Run in the background (a daemon); returns once it holds --pidfile.")
@click.option("--uid", metavar="USER", help="Run as this user (name or id); needs root.")
@click.option("--gid", metavar="GROUP", help="Run as this group (name or id); needs root.")
@click.option("--umask", metavar="MASK",
              help="File mode creation mask: octal with a leading 0 (0022), else decimal.")
@click.option("--executable", metavar="PATH",
              help="The Python a detached worker runs under [default: this one].")
@click.option("--dashboard", is_flag=True,
              help="Also serve the web dashboard, in a process beside the supervisor "
                   "(dashboard_* settings; docs/dashboard.md).")
@_app_command
def worker(app: Celeriac, pools: tuple[str, ...], concurrency: int | None, processes: int | None,
           queues: str | None, exclude_queues: str | None, loglevel: str, logfile: str | None,
           pidfile: str | None, node: str | None,
           prefetch_multiplier: int | None, time_limit: float | None,
           soft_time_limit: float | None, max_tasks_per_child: int | None,
           max_memory_per_child: int | None, shutdown_timeout: float | None,
           max_blocking_time: float | None, task_events: bool, without_heartbeat: bool,
           without_gossip: bool, without_mingle: bool, optimization: str | None,
           beat: bool, detach: bool, uid: str | None, gid: str | None, umask: str | None,
           executable: str | None, autoscale: str | None = None,
           schedule_file: str | None = None, scheduler: str | None = None,
           dashboard: bool = False) -> None:
    """Start a worker: a supervisor and its worker processes."""
    from celeriac.worker.autoscale import autoscaled_groups, parse_autoscale
    from celeriac.worker.options import WorkerOptions, parse_groups
    from celeriac.worker.supervisor import Supervisor

    conf = app.conf
    groups = parse_groups(
        pools or [conf.worker_pool],
        concurrency=concurrency or conf.worker_concurrency or os.cpu_count() or 1,
        processes=processes or conf.worker_processes,
        queues=_split_queues(queues) or [conf.task_default_queue],
        default_queue=conf.task_default_queue, exclude=_split_queues(exclude_queues))
    bounds = parse_autoscale(autoscale) if autoscale else None
    if not app.broker.shared_between_processes:
        raise ConfigurationError(
            f"broker {conf.broker_url!r} lives inside one process; a worker needs a shared "
            "broker such as sqlite:///celeriac.db")
    from celeriac.worker import daemon

    daemon.start(detach=detach, user=uid, group=gid, umask=umask, executable=executable,
                 argv=lambda: ["-A", _child_app_spec(app),
                               *click.get_current_context().obj.get("argv", sys.argv[1:])])
    app.broker.ping()
    app.backend.ping()
    settings: dict[str, Any] = {}
    if time_limit is not None:
        settings["task_time_limit"] = time_limit
    if soft_time_limit is not None:
        settings["task_soft_time_limit"] = soft_time_limit
    if max_blocking_time is not None:
        settings["worker_max_blocking_time"] = max_blocking_time
    if task_events:
        # The supervisor reads it too (worker-heartbeat events), the processes via their spec.
        settings["worker_send_task_events"] = conf.worker_send_task_events = True
    from celeriac.worker.logs import configure_logging, process_logfile
    from celeriac.worker.nodenames import resolve_node

    node_id = resolve_node(node or "")  # what the Supervisor will call itself
    # Unless setup_logging receivers configure logging themselves:
    configure_logging(conf, loglevel, process_logfile(logfile, node_id, None))
    _bound_hard_limit(conf, settings)  # after logging: it may say what it chose
    _note_celery_flags(without_gossip=without_gossip, without_mingle=without_mingle,
                       without_heartbeat=without_heartbeat, optimization=optimization)
    if bounds is not None:
        groups = autoscaled_groups(groups, bounds, concurrency or conf.worker_concurrency)
    app.finalize()  # on_after_finalize: the supervisor knows every task it will know
    options = WorkerOptions(
        app=_child_app_spec(app), groups=groups, node=node or "",
        loglevel=loglevel,
        prefetch_multiplier=prefetch_multiplier or conf.worker_prefetch_multiplier,
        max_tasks_per_child=max_tasks_per_child or conf.worker_max_tasks_per_child,
        max_memory_per_child=max_memory_per_child or conf.worker_max_memory_per_child,
        shutdown_timeout=(conf.worker_shutdown_timeout if shutdown_timeout is None
                          else shutdown_timeout),
        settings=settings, logfile=logfile, heartbeat_events=not without_heartbeat,
        autoscale=bounds)
    with _pidfile(pidfile, node_id):
        daemon.ready(process_logfile(logfile, node_id, None))
        sidecar = _dashboard_sidecar(app) if dashboard else None
        stop_beat = _embedded_beat(app, beat, scheduler, schedule_file, node_id)
        try:
            code = Supervisor(app, options).run()
        finally:
            if stop_beat is not None:
                stop_beat()
            if sidecar is not None:
                from celeriac.cli.dashboard import stop_sidecar

                stop_sidecar(sidecar)
        raise SystemExit(code)


def _bound_hard_limit(conf: Settings, settings: dict[str, Any]) -> None:
    """On RabbitMQ: refuse a hard time limit above the server's consumer_timeout (less a
    margin), or make that bound the hard limit when there is none (consumer_timeout.py)."""
    from celeriac.worker.consumer_timeout import worker_hard_limit

    limit = worker_hard_limit(conf, settings.get("task_time_limit", conf.task_time_limit))
    if limit is not None:
        settings["task_time_limit"] = limit


def _dashboard_sidecar(app: Celeriac) -> subprocess.Popen[bytes]:
    """``--dashboard``: ``celeriac dashboard`` in a process of its own (cli/dashboard.py)."""
    from celeriac.cli.dashboard import start_sidecar

    return start_sidecar(app, _child_app_spec(app))


def _embedded_beat(app: Celeriac, beat: bool, scheduler: str | None,
                   schedule_file: str | None, node: str) -> Callable[[], None] | None:
    """``-B``: the beat thread of ``node`` (:mod:`celeriac.cli.beat`), or None; ``--scheduler`` and
    ``--schedule-filename`` without ``-B`` are logged as unused."""
    if beat:
        from celeriac.cli.beat import start_embedded

        return start_embedded(app, max_interval=None, scheduler=scheduler,
                              schedule_file=schedule_file, worker=node)
    if scheduler or schedule_file:
        import logging

        logging.getLogger("celeriac.supervisor").info(
            "--scheduler/--schedule-filename: used only with -B; ignored")
    return None


def _note_celery_flags(*, without_gossip: bool, without_mingle: bool, without_heartbeat: bool,
                       optimization: str | None) -> None:
    """Say in the log what Celery's flags do here, for those celeriac accepts without
    anything to turn off (docs/migrating.md has the same words)."""
    import logging

    log = logging.getLogger("celeriac.supervisor")
    if without_gossip:
        log.info("--without-gossip: nothing to turn off: celeriac workers do not gossip (they "
                 "see each other through heartbeats in the broker)")
    if without_mingle:
        log.info("--without-mingle: nothing to turn off: celeriac workers do not mingle at "
                 "start-up (revocations live in the broker, there is no state to sync)")
    if without_heartbeat:
        log.info("--without-heartbeat: no worker-heartbeat events or heartbeat_sent signals; "
                 "the node's liveness record in the broker stays (status, inspect and the "
                 "recovery of a vanished node's messages need it)")
    if optimization:
        log.info("-O %s: nothing to change: celeriac's dispatch is always fair (a message never "
                 "waits behind a busy slot while another slot is free)", optimization)


class PidfileRefused(click.ClickException):
    """The pidfile names a running process: one line, and Celery's exit status."""

    exit_code = 73  # os.EX_CANTCREAT, as Celery's pid lock


@contextmanager
def _pidfile(template: str | None, node: str) -> Iterator[None]:
    """``--pidfile``: held while the supervisor runs; a running owner refuses the start with
    Celery's exit status 73."""
    if not template:
        yield
        return
    from celeriac.worker.nodenames import node_format
    from celeriac.worker.pidfile import Pidfile, PidfileLocked

    try:
        pidfile = Pidfile(node_format(template, node, None, option="--pidfile")).acquire()
    except PidfileLocked as exc:
        raise PidfileRefused(str(exc)) from None
    try:
        yield
    finally:
        pidfile.release()


def _child_app_spec(app: Celeriac) -> str:
    ctx = click.get_current_context()
    spec: str | None = ctx.obj.get("app_spec")
    if spec and ctx.obj.get("app_from_spec", True):
        return spec
    from celeriac.loader import locate_app

    return locate_app(app)


def _json_arg(name: str, text: str | None, kind: type) -> Any:
    if text is None:
        return kind()
    try:  # kombu's markers read as values: a datetime is {"__type__": "datetime", ...}
        value = serialization.json_loads(text)
    except (ValueError, RecursionError) as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from None
    if not isinstance(value, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__}", param_hint=name)
    return value


@cli.command()
@click.argument("name")
@click.option("--args", "args_json", metavar="JSON", help="Positional arguments as a JSON list.")
@click.option("--kwargs", "kwargs_json", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--queue", "-Q", help="Queue [default: routed].")
@click.option("--countdown", type=float, help="Run no sooner than this many seconds from now.")
@click.option("--priority", type=click.IntRange(0, 9), help="0-9, 9 runs first.")
@click.option("--expires", type=float, help="Do not run after this many seconds from now.")
@_app_command
def call(app: Celeriac, name: str, args_json: str | None, kwargs_json: str | None,
         queue: str | None, countdown: float | None, priority: int | None,
         expires: float | None) -> None:
    """Send task NAME and print its id."""
    args = _json_arg("--args", args_json, list)
    kwargs = _json_arg("--kwargs", kwargs_json, dict)
    result = app.send_task(name, args, kwargs, queue=queue, countdown=countdown,
                           priority=priority, expires=expires)
    click.echo(result.id)


@cli.command()
@click.argument("task_id")
@click.option("--wait", type=float, help="Wait up to this many seconds for the result.")
@_app_command
def result(app: Celeriac, task_id: str, wait: float | None) -> None:
    """Print the state and result of TASK_ID (as JSON)."""
    record: ResultRecord | None
    record = app.backend.wait(task_id, timeout=wait) if wait is not None else app.backend.get(task_id)
    if record is None:
        click.echo(json.dumps({"task_id": task_id, "status": "PENDING"}))
        return
    out: dict[str, Any] = {"task_id": task_id, "status": record.status}
    if record.status == "SUCCESS" or (record.result is not None and not record.exc_type):
        out["result"] = record.result  # a return value, or the meta of update_state()
    elif record.exc_type:
        out["error"] = {"type": record.exc_type, "message": record.exc_message}
        if record.traceback:
            out["traceback"] = record.traceback
    click.echo(json.dumps(out, default=serialization.to_marker))  # a datetime as its marker
    if record.status == "FAILURE":
        raise SystemExit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_app_command
def status(app: Celeriac, as_json: bool) -> None:
    """Queues (ready, scheduled, in flight, dead), live workers and running beats."""
    from rich.console import Console
    from rich.table import Table

    from celeriac.beat.presence import beats, worker_nodes

    console = Console()
    stats = app.broker.stats()
    records = app.broker.workers()
    workers = worker_nodes(records)
    served = {q for w in workers for q in w.info.get("queues", [])}
    unserved = sorted(name for name, s in stats.items()
                      if (s.ready or s.scheduled or s.in_flight) and name not in served)
    if as_json:
        click.echo(json.dumps({
            "queues": {name: s.as_dict() for name, s in sorted(stats.items())},
            "workers": [{"name": w.name, "last_seen": w.last_seen, **w.info} for w in workers],
            "unserved": unserved,
            "beats": [{"name": b.name, "last_seen": b.last_seen, **b.info} for b in beats(records)],
        }))
        return
    table = Table(title=f"queues on {app.conf.broker_url}")
    for column in ("queue", "ready", "scheduled", "in flight", "dead"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for name, s in sorted(stats.items()):
        label = f"{name} [red](no live worker)[/]" if name in unserved else name
        table.add_row(label, str(s.ready), str(s.scheduled), str(s.in_flight), str(s.dead))
    console.print(table)
    if not workers:
        console.print("no live workers")
    for w in workers:
        info = w.info
        if info.get("orphaned"):
            console.print(f"[bold]{w.name}[/]: [red]supervisor gone[/], its worker processes "
                          f"finish {info.get('running', 0)} task(s)")
            continue
        pools = ", ".join(f"{p['pool']} {p['processes']}x{p['concurrency']} on "
                          f"{','.join(p['queues'])}" for p in info.get("pools", []))
        console.print(f"[bold]{w.name}[/]: {pools}; {info.get('running', 0)} running, "
                      f"{info.get('processed', 0)} done, seen {time.time() - w.last_seen:.1f}s ago")
        for task, count in sorted(info.get("stalls", {}).items()):
            console.print(f"  [yellow]{task}[/] blocked the event loop {count} time(s)")
    for b in beats(records):
        where = f" (worker -B of {b.info['worker']})" if b.info.get("worker") else ""
        console.print(f"[bold]{b.name}[/]: beat{where}, {len(b.info.get('entries', []))} "
                      f"periodic task(s), seen {time.time() - b.last_seen:.1f}s ago")


@cli.command()
@click.option("-Q", "--queues", help="Comma-separated queues [default: all].")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@_app_command
def purge(app: Celeriac, queues: str | None, force: bool) -> None:
    """Delete waiting messages (ready and scheduled) from queues."""
    names = _split_queues(queues)
    what = ", ".join(names) if names else "ALL queues"
    if not force:
        if not sys.stdin.isatty():
            raise click.UsageError("not a terminal, so cannot ask: pass -f to purge")
        if not click.confirm(f"Delete waiting messages of {what}?"):
            raise SystemExit(1)
    total = sum(app.broker.purge(name) for name in names) if names else app.broker.purge(None)
    click.echo(f"purged {total} message(s) from {what}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``celeriac`` script."""
    cli.main(args=argv, prog_name="celeriac",
             obj={"argv": sys.argv[1:] if argv is None else argv})


def run_for_app(app: Celeriac, argv: list[str]) -> int:
    """Run a celeriac command for an app object (``app.worker_main``)."""
    try:
        cli.main(args=argv, prog_name="celeriac",
                 obj={"app": app, "app_from_spec": False, "argv": argv}, standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0
