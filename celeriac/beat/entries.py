"""Periodic task entries: what ``beat_schedule`` and ``app.add_periodic_task`` declare.

An entry is a task name, a schedule, arguments and send options, under a name. The
name is the entry's identity in the broker (its last run is stored under it), so two
beats running the same code agree on it, and renaming an entry starts it afresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ConfigurationError
from celeriac.schedules import BaseSchedule, crontab, maybe_schedule
from celeriac.task import check_send_options

if TYPE_CHECKING:
    from celeriac.app import Celeriac

#: The keys of a ``beat_schedule`` entry (Celery's).
ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"})


@dataclass(frozen=True)
class Entry:
    """One periodic task."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Send options of ``apply_async`` (queue, priority, expires, ...).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_crontab(self) -> bool:
        return isinstance(self.schedule, crontab)


def check_entry(name: Any, spec: Any, app: Celeriac | None = None) -> Entry:
    """An :class:`Entry` from one ``beat_schedule`` item; ConfigurationError naming the
    entry and what is wrong with it otherwise."""
    where = f"beat_schedule entry {name!r}"
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{where}: its name must be a non-empty string")
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where}: must be a mapping with 'task' and 'schedule'")
    unknown = set(spec) - ENTRY_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {sorted(unknown)}; an entry has "
                                 f"{sorted(ENTRY_KEYS)}")
    task, args, kwargs = spec.get("task"), spec.get("args") or (), spec.get("kwargs") or {}
    options = dict(spec.get("options") or {})
    if not isinstance(task, str) or not task:
        raise ConfigurationError(f"{where}: 'task' must be a task name")
    if "schedule" not in spec:
        raise ConfigurationError(f"{where}: 'schedule' is missing")
    if not isinstance(args, Sequence) or isinstance(args, str | bytes):
        raise ConfigurationError(f"{where}: 'args' must be a list or tuple")
    if not isinstance(kwargs, Mapping):
        raise ConfigurationError(f"{where}: 'kwargs' must be a mapping")
    check_send_options(options, f"{where} options")
    if "task_id" in options:
        raise ConfigurationError(f"{where}: each run gets its own task id; drop 'task_id'")
    schedule = maybe_schedule(spec["schedule"], bool(spec.get("relative", False)), app=app)
    return Entry(name, task, schedule, tuple(args), dict(kwargs), options)


def check_schedule(value: Any) -> dict[str, Any]:
    """The ``beat_schedule`` setting's validator: every entry must read (see :func:`check_entry`)."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of entry name -> {'task', 'schedule', ...}")
    for name, spec in value.items():
        check_entry(name, spec)
    return dict(value)


def entries(app: Celeriac) -> list[Entry]:
    """The app's periodic tasks: ``beat_schedule``, then ``add_periodic_task``'s (which
    win on a shared name), schedules bound to ``app`` (its ``timezone``)."""
    specs: dict[str, Any] = {**app.conf.beat_schedule, **app.periodic_tasks}
    return [check_entry(name, spec, app) for name, spec in specs.items()]


def periodic_entry(app: Celeriac, schedule: float | timedelta | BaseSchedule, sig: Any,
                   args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                   name: str | None = None, **options: Any) -> tuple[str, dict[str, Any]]:
    """``app.add_periodic_task``'s entry: Celery's key (``name``, else the signature's repr)
    and spec; ``args`` go before the signature's own, as ``sig.clone(args)`` in Celery."""
    from celeriac.canvas import Signature

    if isinstance(sig, Signature):
        sig = sig.merged(args, kwargs)
    elif isinstance(getattr(sig, "name", None), str):  # a task: its name
        sig = app.signature(sig.name, args, kwargs)
    else:
        raise ConfigurationError(f"add_periodic_task: {sig!r} is not a signature (task.s(...)) "
                                 "or a task")
    spec = {"task": sig.name, "schedule": schedule, "args": sig.args, "kwargs": sig.kwargs,
            "options": {**sig.options, **options}}
    key = name or repr(sig)
    check_entry(key, spec, app)
    return key, spec
