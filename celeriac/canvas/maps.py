"""``task.map(it)``, ``task.starmap(it)`` and ``task.chunks(it, n)``: Celery's xmap,
xstarmap and chunks.

A map is *one* task message (``celery.map`` / ``celery.starmap``, built-in tasks every
app registers, under Celery's names so either side's messages run on the other) whose
worker calls the task's function once per item, in order, in one process: cheap for
many tiny calls, not parallel. ``chunks`` splits the items into parts of ``n`` and
sends one starmap per part as a :class:`group`, so the parts run in parallel and the
result is a :class:`GroupResult` of lists.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.canvas.groups import group
from celeriac.canvas.signatures import Signature, from_dict, wire_options
from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.app import Celeriac
    from celeriac.result import GroupResult
    from celeriac.task import SendOptions, Task

MAP_TASK = "celery.map"
STARMAP_TASK = "celery.starmap"


def _task_of(sig: Signature[Any] | Mapping[str, Any]) -> dict[str, Any]:
    return sig.to_dict() if isinstance(sig, Signature) else dict(sig)


class xmap(Signature[list[Any]]):  # Celery's names
    """``[task(x) for x in it]`` run by one worker as one task (``task.map(it)``)."""

    subtask_type = "xmap"
    _task_name = MAP_TASK

    def __init__(self, task: Signature[Any] | Mapping[str, Any], it: Iterable[Any], *,
                 app: Celeriac | None = None, **options: Any) -> None:
        app = app or (task.app if isinstance(task, Signature) else None)
        if app is None:
            raise ConfigurationError(f"{type(self).__name__}() of a task name needs app=...")
        super().__init__(self._task_name, (), {"task": _task_of(task), "it": list(it)},
                         options or None, app=app, immutable=True)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"[{self.kwargs['task']['task']}(x) for x in {self.kwargs['it']!r:.100}]"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celeriac | None = None) -> Signature[Any]:
        kwargs = d.get("kwargs") or {}
        return cls(kwargs.get("task") or {}, kwargs.get("it") or (), app=app,
                   **wire_options(d.get("options") or {}, str(d.get("task"))))


class xstarmap(xmap):
    """``[task(*x) for x in it]`` run by one worker as one task (``task.starmap(it)``)."""

    subtask_type = "xstarmap"
    _task_name = STARMAP_TASK

    def __repr__(self) -> str:
        return f"[{self.kwargs['task']['task']}(*x) for x in {self.kwargs['it']!r:.100}]"


class chunks(Signature[list[Any]]):
    """The items in parts of ``n``, each part one starmap, sent as a group
    (``task.chunks(it, n)``): ``apply_async()`` returns a :class:`GroupResult` of lists."""

    subtask_type = "chunks"

    def __init__(self, task: Signature[Any] | Mapping[str, Any], it: Iterable[Any], n: int, *,
                 app: Celeriac | None = None, **options: Any) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"chunks(n={n!r}): the size of a part must be an integer >= 1")
        app = app or (task.app if isinstance(task, Signature) else None)
        if app is None:
            raise ConfigurationError("chunks() of a task name needs app=...")
        super().__init__("celery.chunks", (), {"task": _task_of(task), "it": list(it), "n": n},
                         options or None, app=app, immutable=True)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celeriac | None = None) -> Signature[Any]:
        kwargs = d.get("kwargs") or {}
        return cls(kwargs.get("task") or {}, kwargs.get("it") or (), kwargs.get("n", 0), app=app,
                   **wire_options(d.get("options") or {}, "celery.chunks"))

    def group(self) -> group[list[Any]]:
        """The group of starmaps it sends."""
        items, n = iter(self.kwargs["it"]), self.kwargs["n"]
        parts = iter(lambda: list(itertools.islice(items, n)), [])
        return group([xstarmap(self.kwargs["task"], part, app=self.app, **self.options)
                      for part in parts])

    def apply_async(self, args: Sequence[Any] | None = None,  # type: ignore[override]
                    kwargs: Mapping[str, Any] | None = None,
                    **options: Unpack[SendOptions]) -> GroupResult[list[Any]]:
        """Send the parts as one group (all or none)."""
        return self.group().apply_async(**options)

    def delay(self, /, *args: Any, **kwargs: Any) -> GroupResult[list[Any]]:  # type: ignore[override]
        return self.apply_async()

    def __call__(self, **options: Any) -> GroupResult[list[Any]]:  # type: ignore[override]
        return self.apply_async(**options)


def _function(app: Celeriac, sig: Any) -> Task[Any, Any]:
    """The task a map's ``task`` argument names (the function is called, not sent)."""
    return app.get_task(from_dict(sig, app).name)


def register_builtins(app: Celeriac) -> None:
    """Register ``celery.map`` and ``celery.starmap`` on ``app``: what a map message runs."""
    from celeriac.task_options import TaskOptions

    def xmap_run(task: dict[str, Any], it: list[Any]) -> list[Any]:
        from celeriac.aio.await_ import call_and_wait  # awaits an async def task's calls

        fn = _function(app, task)
        return [call_and_wait(fn, item) for item in it]

    def xstarmap_run(task: dict[str, Any], it: list[Any]) -> list[Any]:
        from celeriac.aio.await_ import call_and_wait

        fn = _function(app, task)
        return [call_and_wait(fn, *item) for item in it]

    app.add_task(xmap_run, TaskOptions.check({"name": MAP_TASK}), keep_existing=True)
    app.add_task(xstarmap_run, TaskOptions.check({"name": STARMAP_TASK}), keep_existing=True)
