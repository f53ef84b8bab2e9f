"""The Tasks page (a search of the result backend's task index) and a task's page.

The search's filters come from the query string, each bounded and checked here
(:func:`parse_search`): a bad value is answered with a message on the page and a 400,
never sent to the backend. The backend pages on its side (:meth:`ResultBackend.search
<celeriac.backends.base.ResultBackend.search>`: newest first, with the total), with
the page links of the message listings (:func:`~celeriac.dashboard.messages.page_links`).
A backend that keeps no index (``result_index`` off) or cannot search says so on the
page, which still offers the jump to a task by its exact id.

A task's page (:func:`build_task_view`) shows its stored record with what
:meth:`ResultBackend.task_detail <celeriac.backends.base.ResultBackend.task_detail>`
adds (lineage, children, delivery count) and its events from the broker's capped log
as a timeline. A task with no record yet (waiting, running without
``task_track_started``, or ignoring its result) but with events shows what they tell:
its state, name, worker, arguments, exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import render_template, request

from celeriac.backends.search import PREFIX_SCAN, TaskEvent, TaskSummary
from celeriac.dashboard.app import dashboard
from celeriac.dashboard.messages import PAGE_SIZE, PAGE_SIZE_MAX, int_arg, page_links
from celeriac.exceptions import BackendError, BrokerError, ConfigurationError
from celeriac.middleware.events import TASK_STATES
from celeriac.states import ALL_STATES, PENDING

if TYPE_CHECKING:
    from celeriac.backends.base import ResultRecord
    from celeriac.backends.search import TaskDetail

#: Longest task id, id prefix or task name accepted from a request.
TEXT_LIMIT = 255
#: A custom state (``update_state(state="PROGRESS")``): capitals, digits and ``_``.
CUSTOM_STATE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
#: The deepest offset a search may ask for (the backends skip to it in their index).
OFFSET_MAX = 10**7
#: Children linked from a task's page (a task that sent thousands shows the first ones).
CHILDREN_SHOWN = 100
#: Events of the broker's log a task's page reads back through at most, unless asked to
#: read all those kept (``?events=all``): it finds a task that ran lately in a read or
#: two and keeps the page well under 300 ms however large the events (a full log of
#: 10,000 events with stacks or tracebacks took close to a second to read from Redis on a
#: loaded 2-core machine: bench/dashboard_scale.py).
TIMELINE_SCAN = 2000
#: Characters of one event's detail line (arguments, result, exception) on the timeline.
DETAIL_LIMIT = 300


@dataclass(frozen=True)
class SearchQuery:
    """The Tasks page's filters and page, as checked by :func:`parse_search`."""

    task_id_prefix: str | None = None
    name: str | None = None
    state: str | None = None
    offset: int = 0
    limit: int = PAGE_SIZE

    @property
    def params(self) -> dict[str, str]:
        """The filters as query parameters (kept on the page links)."""
        given = {"prefix": self.task_id_prefix, "name": self.name, "state": self.state}
        return {key: value for key, value in given.items() if value}


def _text(name: str, label: str, errors: list[str]) -> str | None:
    value = (request.args.get(name) or "").strip()
    if len(value) > TEXT_LIMIT:
        errors.append(f"The {label} is too long: at most {TEXT_LIMIT} characters.")
        return None
    return value or None


def _state(errors: list[str]) -> str | None:
    value = (request.args.get("state") or "").strip()
    if not value:
        return None
    if value.upper() in ALL_STATES:
        return value.upper()
    if CUSTOM_STATE.fullmatch(value):
        return value
    errors.append(f"No such state: {value[:64]!r}. A state is one of "
                  f"{', '.join(sorted(ALL_STATES))}, or a custom state in capitals "
                  f"(letters, digits and _).")
    return None


def parse_search() -> tuple[SearchQuery, list[str]]:
    """The request's search, and what is wrong with it (each a sentence for the page)."""
    errors: list[str] = []
    query = SearchQuery(task_id_prefix=_text("prefix", "id prefix", errors),
                        name=_text("name", "task name", errors), state=_state(errors),
                        offset=int_arg("offset", 0, 0, OFFSET_MAX),
                        limit=int_arg("limit", PAGE_SIZE, 1, PAGE_SIZE_MAX))
    return query, errors


def search_view() -> tuple[str, int]:
    """The Tasks page: 200, 400 (a bad filter: the message says which) or 503 (the
    backend did not answer)."""
    query, errors = parse_search()
    found: list[TaskSummary] = []
    total = 0
    unavailable = None
    status = 400 if errors else 200
    if not errors:
        try:
            found, total = dashboard().data.search(query)
        except (ConfigurationError, NotImplementedError) as exc:
            unavailable = str(exc) or "this result backend cannot search its tasks."
        except BackendError as exc:
            errors.append(f"The result backend did not answer: {exc}")
            status = 503
    return render_template(
        "tasks.html", page="tasks", query=query, found=found, total=total, errors=errors,
        unavailable=unavailable, links=page_links(query.offset, query.limit, total),
        states=sorted(ALL_STATES), prefix_scan=PREFIX_SCAN), status


# -- a task's page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """One event on a task's timeline."""

    #: The event's type (``task-received``) and its short label (``received``).
    type: str
    label: str
    time: float
    worker: str
    #: Seconds since the task's first event shown.
    offset: float
    #: What the event adds, in a line (plain text: the template escapes it).
    detail: str
    #: The event reports a failure, a retry, a revoke or a rejection.
    bad: bool


def _detail(event: TaskEvent, redact: bool) -> str:
    """The line an event adds on the timeline; arguments left out when ``redact``."""
    data = event.fields
    parts: list[str] = []
    if event.type == "task-received":
        if data.get("retries"):
            parts.append(f"retry {data['retries']}")
        if not redact:
            parts.append(f"args {data.get('args', '-')} kwargs {data.get('kwargs', '-')}")
        if data.get("eta"):
            parts.append(f"eta {data['eta']}")
    elif event.type == "task-started" and data.get("pid"):
        parts.append(f"pid {data['pid']}")
    elif event.type == "task-succeeded":
        if isinstance(data.get("runtime"), int | float):
            parts.append(f"in {data['runtime']:.3f} s")
        if "result" in data:
            parts.append(f"result {data['result']}")
    elif event.type in ("task-failed", "task-retried") and data.get("exception"):
        parts.append(str(data["exception"]))
    elif event.type == "task-rejected":
        parts.append(f"{data.get('reason') or 'rejected'}"
                     f"{' (requeued)' if data.get('requeue') else ''}")
    elif event.type == "task-revoked":
        parts.append("expired" if data.get("expired") else
                     "terminated" if data.get("terminated") else "revoked before it ran")
    line = " · ".join(parts)
    return line if len(line) <= DETAIL_LIMIT else line[:DETAIL_LIMIT] + "…"


def timeline(events: list[TaskEvent], redact: bool) -> list[Moment]:
    """The task's events as the page lists them, oldest first."""
    first = events[0].time if events else 0.0
    bad = {"task-failed", "task-retried", "task-revoked", "task-rejected"}
    return [Moment(type=event.type, label=event.type.removeprefix("task-"), time=event.time,
                   worker=event.worker, offset=max(0.0, event.time - first),
                   detail=_detail(event, redact), bad=event.type in bad)
            for event in events]


@dataclass(frozen=True)
class TaskView:
    """What a task's page shows: its record when stored, else what its events tell."""

    task_id: str
    record: ResultRecord | None
    #: The record's state; without one, the state its newest event reports; else PENDING.
    state: str
    name: str | None
    worker: str | None
    retries: int
    #: How many times the broker delivered it (None: not known).
    deliveries: int | None
    parent_id: str | None
    root_id: str | None
    group_id: str | None
    children: list[str]
    #: Children not linked (beyond :data:`CHILDREN_SHOWN`).
    more_children: int
    timeline: list[Moment]
    #: Arguments as the task-received event has them (a repr), when no record has them.
    event_args: str | None = None
    event_kwargs: str | None = None
    #: The exception and traceback of a failed event, when no record has them.
    event_exception: str | None = None
    event_traceback: str | None = None
    #: The read of the event log stopped at :data:`TIMELINE_SCAN` events short of the
    #: oldest kept, without finding every run (``?events=all`` reads them all).
    events_partial: bool = False
    #: Why the events could not be read (the broker's message), if they could not.
    events_error: str | None = None


def _last(events: list[TaskEvent], key: str) -> Any:
    """The newest value of field ``key`` among ``events`` (None: none has it)."""
    for event in reversed(events):
        if event.fields.get(key) is not None:
            return event.fields[key]
    return None


def _parent(task_id: str, recorded: str | None, events: list[TaskEvent]) -> str | None:
    """The task that sent ``task_id``: a retry's message names the task itself as its
    parent (as Celery's do), so the record of a retried task has lost the real one;
    the first run's ``task-received`` still has it, when kept."""
    sent_by = [recorded, *(e.fields.get("parent_id") for e in events)]
    return next((found for found in sent_by if found and found != task_id), None)


def _read(task_id: str, scan: int | None
          ) -> tuple[TaskDetail | None, list[TaskEvent], bool, str | None]:
    """The task's detail (None: no record), its events (read back through at most
    ``scan`` events), whether that bound stopped the read short, and why the events could
    not be read, if so (the record is shown without them)."""
    data = dashboard().data
    detail = data.task_detail(task_id)
    runs = detail.record.retries + 1 if detail is not None else 1
    try:
        read = data.task_events(task_id, runs, scan)
    except BrokerError as exc:
        return detail, [], False, str(exc)
    return detail, read.events, read.partial, None


def build_task_view(task_id: str, redact: bool, scan: int | None = TIMELINE_SCAN) -> TaskView:
    """What ``task_id``'s page shows: its record and detail, else what its events tell."""
    detail, events, partial, error = _read(task_id, scan)
    if detail is None:
        return _from_events(task_id, events, redact, partial, error)
    record = detail.record
    ran = record.status != PENDING or bool(events)
    children = detail.children
    return TaskView(
        task_id=task_id, record=record, state=record.status,
        name=record.name or _last(events, "name"),
        worker=record.worker or (events[-1].worker if events else None),
        retries=record.retries,
        # None in the record: delivered once if it ran (the count is kept when over one).
        deliveries=detail.deliveries if detail.deliveries is not None else 1 if ran else None,
        parent_id=_parent(task_id, detail.parent_id, events), root_id=_last(events, "root_id"),
        group_id=detail.group_id, children=children[:CHILDREN_SHOWN],
        more_children=max(0, len(children) - CHILDREN_SHOWN),
        timeline=timeline(events, redact), events_partial=partial, events_error=error)


def _from_events(task_id: str, events: list[TaskEvent], redact: bool, partial: bool,
                 error: str | None) -> TaskView:
    """The page of a task with no record: its state is the one its newest event reports."""
    failed = next((e for e in reversed(events) if e.type in ("task-failed", "task-retried")),
                  None)
    state = next((TASK_STATES[e.type] for e in reversed(events) if e.type in TASK_STATES),
                 PENDING)
    return TaskView(
        task_id=task_id, record=None, state=state, name=_last(events, "name"),
        worker=events[-1].worker if events else None,
        retries=int(_last(events, "retries") or 0), deliveries=1 if events else None,
        parent_id=_parent(task_id, None, events), root_id=_last(events, "root_id"),
        group_id=None, children=[], more_children=0, timeline=timeline(events, redact),
        event_args=_last(events, "args"), event_kwargs=_last(events, "kwargs"),
        event_exception=str(failed.fields.get("exception") or "") if failed else None,
        event_traceback=str(failed.fields.get("traceback") or "") or None if failed else None,
        events_partial=partial, events_error=error)


def task_view(task_id: str) -> str:
    """A task's page; ``?events=all`` reads the whole event log kept for its timeline."""
    redact = bool(dashboard().app.conf.dashboard_redact_args)
    scan = None if request.args.get("events") == "all" else TIMELINE_SCAN
    view = build_task_view(task_id, redact, scan)
    return render_template("task.html", task_id=task_id, view=view, record=view.record,
                           page="tasks", timeline_scan=TIMELINE_SCAN)
