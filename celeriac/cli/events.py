"""``celeriac events``: what workers and producers recorded in the broker's event stream.

Two ways to show it:

* the task view (default): one line per task with its latest state, name, id,
  worker and runtime (plus the exception of a failure or retry, or why it was
  rejected or revoked). On a terminal it is a table, redrawn in place with
  ``--follow``; when stdout is not a terminal it prints one line per task event
  instead, ``STATE  NAME  ID  WORKER  RUNTIME  [INFO]``, so it can be piped, and
  a worker event (online, offline, a blocked event loop) as ``TYPE  WORKER  key=value...``.
  ``worker-heartbeat`` events are left out unless ``--type`` asks for them;
* ``--dump``: every event as one JSON line, ``{"seq", "time", "type", "worker", "data"}``.

Both read the stream with the broker's cursor (``--after SEQ``), filter by event
type (``--type``) and task name (``--task``), and ``--follow`` keeps looking for
new events until Ctrl-C or SIGTERM. The events themselves are described in
:mod:`celeriac.middleware.events` and ``docs/monitoring.md``.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from celeriac.middleware.events import EVENT_TYPES, TASK_STATES
from celeriac.settings import suggest

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.brokers.base import Broker, WorkerEvent

#: A decorator that loads the ``-A`` app and passes it first (``celeriac.cli.main``'s).
AppCommand = Callable[[Callable[..., Any]], Callable[..., Any]]

#: Seconds between two looks at the broker with ``--follow``.
FOLLOW_INTERVAL = 0.2
#: Tasks the view remembers; beyond that the ones not heard of for longest are forgotten.
VIEW_TASKS = 10_000
#: Fields of a worker event shown on its line (when present), in this order.
WORKER_FIELDS = ("name", "task", "id", "pid", "active", "processed", "seconds", "cold", "pools")
#: Colour of each state in the terminal table.
STATE_STYLES = {"PENDING": "dim", "RECEIVED": "white", "STARTED": "cyan", "SUCCESS": "green",
                "FAILURE": "bold red", "RETRY": "yellow", "REVOKED": "magenta",
                "REJECTED": "red"}


# -- filtering -----------------------------------------------------------------------------
def split_values(values: tuple[str, ...]) -> tuple[str, ...]:
    """``("a,b", "c")`` -> ``("a", "b", "c")``: options that repeat and take comma lists."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def check_types(ctx: click.Context | None, param: click.Parameter | None,
                values: tuple[str, ...]) -> tuple[str, ...]:
    """``--type`` patterns, each of which must match a known event type."""
    patterns = split_values(values)
    for pattern in patterns:
        if not any(fnmatchcase(kind, pattern) for kind in EVENT_TYPES):
            raise click.BadParameter(
                f"{pattern!r} matches no event type{suggest(pattern, list(EVENT_TYPES))}; "
                f"the types are {', '.join(EVENT_TYPES)}")
    return patterns


def task_name(event: WorkerEvent) -> str | None:
    """The task an event is about: ``name`` of task events, ``task`` of task-blocked/unblocked."""
    data = event.data
    name = data.get("name") or data.get("task")
    return name if isinstance(name, str) else None


@dataclass(frozen=True)
class EventFilter:
    """Which events to show: type and task name patterns (globs), empty meaning all."""

    types: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    #: Leave out worker-heartbeat (the view does unless ``--type`` selects events).
    heartbeats: bool = True

    def __call__(self, event: WorkerEvent) -> bool:
        kind = event.type
        if self.types:
            if not any(fnmatchcase(kind, pattern) for pattern in self.types):
                return False
        elif not self.heartbeats and kind == "worker-heartbeat":
            return False
        if self.tasks:
            name = task_name(event)
            return name is not None and any(fnmatchcase(name, pattern) for pattern in self.tasks)
        return True


# -- the task view -------------------------------------------------------------------------
@dataclass
class TaskLine:
    """One task as the view shows it."""

    uuid: str
    name: str = "?"
    state: str = ""
    worker: str = "-"
    runtime: float | None = None
    #: The exception of a failure or retry, why it was rejected or revoked.
    info: str = ""
    #: When the event that set ``state`` happened: a late event cannot turn the state back.
    timestamp: float = 0.0

    def text(self) -> str:
        """The line for a pipe; an exception or reason spread over lines is joined up."""
        runtime = "-" if self.runtime is None else f"{self.runtime:.3f}s"
        line = f"{self.state:<8}  {self.name}  {self.uuid}  {self.worker}  {runtime}"
        return f"{line}  {' '.join(self.info.split())}" if self.info else line


@dataclass
class WorkerLine:
    """One worker node as the view's footer shows it."""

    name: str
    state: str = "online"
    active: int = 0
    processed: int = 0


def event_info(event: WorkerEvent) -> str:
    """The extra column of a task event: its exception, or why it was rejected or revoked."""
    data = event.data
    if event.type in ("task-failed", "task-retried"):
        return str(data.get("exception") or "")
    if event.type == "task-rejected":
        return f"{'requeued' if data.get('requeue') else 'dead-lettered'}: {data.get('reason') or ''}"
    if event.type == "task-revoked":
        if data.get("expired"):
            return "expired"
        if data.get("terminated"):
            return f"terminated (signal {data.get('signum')})"
        return "revoked"
    return ""


def worker_text(event: WorkerEvent) -> str:
    """A worker event as one line: ``TYPE  WORKER  key=value ...``."""
    data = event.data
    extras = " ".join(f"{key}={data[key]}" for key in WORKER_FIELDS if data.get(key) is not None)
    return f"{event.type}  {event.worker}  {extras}".rstrip()


@dataclass
class TaskView:
    """The latest state of each task (and of each worker) from the events seen so far."""

    keep: int = VIEW_TASKS
    tasks: OrderedDict[str, TaskLine] = field(default_factory=OrderedDict)
    workers: dict[str, WorkerLine] = field(default_factory=dict)

    def add(self, event: WorkerEvent) -> TaskLine | None:
        """Take in one event; for a task event, the task's line as that event reports it."""
        state = TASK_STATES.get(event.type)
        uuid = event.data.get("uuid")
        if state is None or not isinstance(uuid, str):
            self._worker_event(event)
            return None
        line = self._line(uuid)
        data = event.data
        name = data.get("name")
        if isinstance(name, str) and name:
            line.name = name
        if event.type != "task-sent":  # task-sent comes from the producer, not a worker
            line.worker = event.worker
        runtime = data.get("runtime")
        stamp = data.get("timestamp")
        stamp = float(stamp) if isinstance(stamp, int | float) else event.time
        info = event_info(event)
        # A task-sent (PENDING) is stamped by the producer after its publish returned: on a
        # busy machine the worker may have finished the task before that, so any worker
        # event replaces it whatever the stamps say.
        if stamp >= line.timestamp or line.state == "PENDING":
            line.state, line.info, line.timestamp = state, info, stamp
            line.runtime = float(runtime) if isinstance(runtime, int | float) else None
        return replace(line, state=state, info=info)

    def _line(self, uuid: str) -> TaskLine:
        line = self.tasks.get(uuid)
        if line is None:
            line = self.tasks[uuid] = TaskLine(uuid)
            if len(self.tasks) > self.keep:
                self.tasks.popitem(last=False)
        else:
            self.tasks.move_to_end(uuid)
        return line

    def _worker_event(self, event: WorkerEvent) -> None:
        if not event.type.startswith("worker-"):
            return
        worker = self.workers.setdefault(event.worker, WorkerLine(event.worker))
        worker.state = "offline" if event.type == "worker-offline" else "online"
        data = event.data
        for key in ("active", "processed"):
            value = data.get(key)
            if isinstance(value, int):
                setattr(worker, key, value)

    def table(self, rows: int) -> Table:
        """The newest ``rows`` tasks as a rich table, the workers in its caption."""
        table = Table(expand=True)
        for column in ("state", "name", "id", "worker", "runtime", "info"):
            table.add_column(column, justify="right" if column == "runtime" else "left",
                             no_wrap=column != "info")
        for line in list(self.tasks.values())[-rows:]:
            runtime = "" if line.runtime is None else f"{line.runtime:.3f}s"
            # Text, not markup: a name or an exception may hold brackets.
            table.add_row(Text(line.state, style=STATE_STYLES.get(line.state, "white")),
                          Text(line.name), Text(line.uuid), Text(line.worker), runtime,
                          Text(line.info))
        table.caption = Text("  ".join(
            f"{w.name}: {w.state}, {w.active} active, {w.processed} processed"
            for w in self.workers.values()) or "no worker events seen")
        return table


# -- reading -------------------------------------------------------------------------------
@dataclass
class Reader:
    """Pages of events from the broker's cursor, until caught up or, with ``follow``,
    until a signal asks to stop."""

    broker: Broker
    after: int
    limit: int
    follow: bool
    #: Stop after the first look (``--dump`` without ``--follow``, as it always did).
    once: bool = False
    stopped: list[int] = field(default_factory=list)

    def on_signal(self, signum: int, frame: object) -> None:
        self.stopped.append(signum)

    def pages(self) -> Iterator[list[WorkerEvent]]:
        if self.follow:
            signal.signal(signal.SIGTERM, self.on_signal)
            signal.signal(signal.SIGINT, self.on_signal)
        while not self.stopped:
            got = self.broker.events(after=self.after, limit=self.limit)
            if got:
                self.after = got[-1].seq
            yield got
            if self.once and not self.follow:
                return
            if len(got) < self.limit:
                if not self.follow:
                    return
                time.sleep(FOLLOW_INTERVAL)


def dump(reader: Reader, keep: EventFilter) -> None:
    for page in reader.pages():
        for event in page:
            if keep(event):
                click.echo(json.dumps({"seq": event.seq, "time": event.time, "type": event.type,
                                       "worker": event.worker, "data": event.data}))
        sys.stdout.flush()


def print_lines(reader: Reader, keep: EventFilter) -> None:
    """The view for a pipe: one line per task event (or worker event) as it comes."""
    view = TaskView()
    for page in reader.pages():
        for event in page:
            if keep(event):
                line = view.add(event)
                click.echo(line.text() if line is not None else worker_text(event))
        sys.stdout.flush()


def show_table(reader: Reader, keep: EventFilter, console: Console) -> None:
    """The view for a terminal: a table of the newest tasks, redrawn as events come."""
    view = TaskView()

    def rows() -> int:
        return max(console.height - 8, 5)

    def take(page: list[WorkerEvent]) -> None:
        for event in page:
            # The footer follows every worker, whatever the filter shows of the tasks.
            if keep(event) or event.type.startswith("worker-"):
                view.add(event)

    if not reader.follow:
        for page in reader.pages():
            take(page)
        console.print(view.table(rows()))
        return
    with Live(view.table(rows()), console=console, auto_refresh=False) as live:
        for page in reader.pages():
            take(page)
            if page:
                live.update(view.table(rows()), refresh=True)


def show_events(app: Celeriac, *, after: int, limit: int, follow: bool, as_json: bool,
                types: tuple[str, ...], tasks: tuple[str, ...]) -> None:
    """What ``celeriac events`` does, once its options are parsed."""
    reader = Reader(app.broker, after, limit, follow, once=as_json)
    keep = EventFilter(types, split_values(tasks), heartbeats=as_json)
    try:
        if as_json:
            dump(reader, keep)
        elif sys.stdout.isatty():
            show_table(reader, keep, Console())
        else:
            print_lines(reader, keep)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as a pipeline expects.
        sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - Python's own advice for a closed pipe
        raise SystemExit(0) from None


def events_command(app_command: AppCommand) -> click.Command:
    """The ``events`` command; ``app_command`` loads the ``-A`` app (``celeriac.cli.main``)."""

    @click.command("events")
    @click.option("--after", default=0, show_default=True, type=click.IntRange(min=0),
                  help="Only events with a larger seq.")
    @click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1),
                  help="Events read per look at the broker (--dump without --follow looks once).")
    @click.option("-f", "--follow", is_flag=True,
                  help="Keep showing new events until Ctrl-C or SIGTERM.")
    @click.option("--dump", "as_json", is_flag=True,
                  help="Print every event as a JSON line instead of the task view.")
    @click.option("-t", "--type", "types", multiple=True, metavar="TYPE[,TYPE...]",
                  callback=check_types,
                  help="Only events of these types; globs such as 'task-*' work. Repeatable.")
    @click.option("--task", "tasks", multiple=True, metavar="NAME[,NAME...]",
                  help="Only events of tasks with these names; globs such as 'tasks.*' work. "
                       "Repeatable.")
    @app_command
    def events(app: Celeriac, after: int, limit: int, follow: bool, as_json: bool,
               types: tuple[str, ...], tasks: tuple[str, ...]) -> None:
        """Show task and worker events: a live view of each task's state, or JSON lines."""
        show_events(app, after=after, limit=limit, follow=follow, as_json=as_json, types=types,
                    tasks=tasks)

    return events
