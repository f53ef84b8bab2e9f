"""``Task.replace(sig)``: a running task hands its place to a signature (Celery's meaning).

The replacement takes over everything that follows the task, so a client holding the
task's result, a chain around it or a chord it belongs to cannot tell the difference:

* the replacement's *last* task runs under the replaced task's id (a single task is
  frozen with it; a chain's last step gets it), so ``AsyncResult(task_id).get()`` is the
  replacement's result;
* it inherits the request's callbacks (on its last task), errbacks (on every task), the
  rest of its chain (the message ``chain`` of the replacement continues with it) and its
  chord membership (the last task carries the chord marks, so the chord is joined once,
  with the replacement's result);
* a group is made a chord whose body is the built-in ``celery.accumulate`` (Celery's way):
  the body gets the group's values, runs under the replaced id and carries the rest (its
  message's chain and chord marks travel in the body's options and
  :func:`celeriac.middleware.chords.fire_body` sends them on);
* the current run ends as :class:`~celeriac.exceptions.Ignore`: nothing stored for it,
  its message acked.

Eagerly (``apply``, ``task_always_eager``) the replacement runs here and its value is what
``return self.replace(sig)`` returns, as Celery's ``on_replace`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.canvas.chains import chain
from celeriac.canvas.chords import chord
from celeriac.canvas.groups import group
from celeriac.canvas.signatures import Signature, from_dict
from celeriac.context import current_request, current_task_var
from celeriac.exceptions import ConfigurationError, Ignore

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.context import Request
    from celeriac.task import MessageOptions, Task

#: The built-in task a group replacement's chord body runs (Celery's name).
ACCUMULATE_TASK = "celery.accumulate"


def replace(task: Task[..., Any], sig: Signature[Any] | group[Any]) -> Any:
    """Replace the running ``task`` with ``sig`` (see the module doc). Raises ``Ignore`` in a
    worker; returns the replacement's value in an eager run."""
    request = current_request.get()
    if not task.options.bind:
        raise ConfigurationError(f"{task.name}.replace(): only a bound task (bind=True) can "
                                 "replace itself (it is called as self.replace(sig))")
    if request is None or not request.id or request.called_directly \
            or current_task_var.get() is not task:
        raise ConfigurationError(f"{task.name}.replace() called outside a run of that task "
                                 "(a worker's or apply()'s)")
    if not isinstance(sig, Signature | group):
        raise TypeError(f"replace() takes a signature, chain or group, not {type(sig).__name__}")
    if isinstance(sig, chain) and not sig.tasks:
        raise ConfigurationError("cannot replace a task with an empty chain")
    if request.is_eager:
        return sig.apply().get()
    steps = _steps(task.app, sig)
    last = steps[-1]
    if isinstance(last, chord):
        _send_chord(task.app, request, last)
    else:
        _send_tasks(task.app, request, steps)
    raise Ignore(f"replaced by {sig!r}")


def _steps(app: Celeriac, sig: Signature[Any] | group[Any]) -> list[Signature[Any]]:
    """The replacement as steps: tasks, a group made a chord with ``celery.accumulate``.
    A chord may only be the whole replacement (its body carries what follows)."""
    accumulate: Signature[Any] = Signature(ACCUMULATE_TASK, (), {"index": 0}, app=app)
    if isinstance(sig, group):
        return [chord(sig, accumulate, app=app)]
    if isinstance(sig, chain):
        steps: list[Any] = sig.unchain_tasks()
    else:
        steps = [sig.clone()]
    for index, step in enumerate(steps):
        whole = index == 0 and len(steps) == 1
        if whole and isinstance(step, chord):
            continue
        if not (isinstance(step, Signature) and step.subtask_type is None):
            raise ConfigurationError(
                f"replace() with {sig!r}: celeriac replaces a task with a task, a chain of "
                f"tasks, a group or a chord ({step!r} inside a chain is not supported yet); "
                "see docs/canvas.md")
    return steps


def _marks(request: Request) -> dict[str, Any]:
    """The replaced task's chord membership, as Celery marks a chain step's options."""
    if not request.chord:
        return {}
    return {"chord": request.chord, "group_id": request.group, "group_index": request.group_index}


def _send_tasks(app: Celeriac, request: Request, steps: list[Signature[Any]]) -> None:
    """Send the first step; the others, then the replaced task's chain, travel in its
    message; the last step has the replaced id, links and chord marks."""
    whole: chain[Any] = chain(*steps, app=app)
    whole.set(task_id=request.id)
    for callback in request.callbacks or ():
        whole.link(from_dict(callback, app))
    for errback in request.errbacks or ():
        whole.link_error(from_dict(errback, app))
    frozen, _ = whole.frozen_steps()
    rest = [step.to_dict() for step in reversed(frozen[1:])]
    marks = _marks(request)
    continuation = [*(request.chain or ()), *rest]
    message: MessageOptions = {"chain": continuation or None, "root_id": request.root_id}
    if marks and rest:
        rest[0]["options"].update(marks)
    elif marks:
        message.update({"chord": marks["chord"], "group": marks["group_id"],
                        "group_index": marks["group_index"]})
    first = frozen[0]
    assert isinstance(first, Signature)  # _steps: every step here is a task
    first.send(**message)


def _send_chord(app: Celeriac, request: Request, whole: chord[Any]) -> None:
    """Send a chord whose body runs under the replaced id and carries what follows it."""
    whole.set(task_id=request.id)
    for callback in request.callbacks or ():
        whole.link(from_dict(callback, app))
    for errback in request.errbacks or ():
        whole.link_error(from_dict(errback, app))
    body, group_id = whole.body_and_header()
    extra: dict[str, Any] = body.options  # type: ignore[assignment]  # message options, raw
    extra.update(_marks(request))
    if request.chain:
        extra["chain"] = list(request.chain)
    whole._send_header(whole, body, group_id, None, None)


def register_accumulate(app: Celeriac) -> None:
    """Register ``celery.accumulate``: a group replacement's chord body (Celery's task)."""
    from celeriac.task_options import TaskOptions

    def accumulate(*args: Any, index: int | None = None) -> Any:
        return args[index] if index is not None else list(args)

    app.add_task(accumulate, TaskOptions.check({"name": ACCUMULATE_TASK}), keep_existing=True)
