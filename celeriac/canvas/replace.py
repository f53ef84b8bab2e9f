"""``Task.replace(sig)``: a running task hands its place to a signature (Celery's meaning).

The replacement (a task, a group, a chord, or a chain of those with groups and chords
anywhere) takes over everything that follows the task, so a client holding the task's
result, a chain around it or a chord it belongs to cannot tell the difference:

* it is sent as a chain whose *last* task runs under the replaced task's id (a chain's
  last task, or its last chord's body), so ``AsyncResult(task_id).get()`` is the
  replacement's result; a group at the end is made a chord whose body is the built-in
  ``celery.accumulate`` (Celery's way), which gets the group's values;
* it inherits the request's callbacks (on that last task), errbacks (on every task), the
  rest of its chain and its chord membership: the chain continues after the last task
  (in the first message's ``chain``, or, after a chord, in that chord's body's, see
  :func:`celeriac.canvas.chains.folded`) and the last task carries the chord marks, so
  the chord is joined once, with the replacement's result;
* a failure before the replacement's last part reaches the replaced id and its chord
  through the built-in errback ``celeriac.replace_failed`` (:func:`_guard`);
* the current run ends as :class:`~celeriac.exceptions.Ignore`: nothing stored for it,
  its message acked.

Eagerly (``apply``, ``task_always_eager``) the replacement runs here and its value is what
``return self.replace(sig)`` returns, as Celery's ``on_replace`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.canvas.chains import chain, folded
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
#: ``task.chunks(...)``'s task name (a chunks copied into a chain becomes a task of it).
CHUNKS_TASK = "celery.chunks"
#: The built-in errback that passes a replacement's failure on (:func:`_guard`).
REPLACE_FAILED_TASK = "celeriac.replace_failed"


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
    steps = _steps(task.app, sig)
    if request.is_eager:
        return sig.apply().get()
    _send(task.app, request, steps)
    raise Ignore(f"replaced by {sig!r}")


def _steps(app: Celeriac, sig: Signature[Any] | group[Any]) -> list[Any]:
    """The replacement as chain steps: tasks and chords (a group followed by a task is one,
    as in any chain); a group at the end is made a chord whose body is
    ``celery.accumulate`` (Celery's way), so the replaced id has one task to run under."""
    steps: list[Any] = sig.unchain_tasks() if isinstance(sig, chain) else [sig]
    for step in steps:
        _check_step(sig, step)
    if isinstance(steps[-1], group):
        accumulate: Signature[Any] = Signature(ACCUMULATE_TASK, (), {"index": 0}, app=app)
        steps[-1] = chord(steps[-1], accumulate, app=app)
    return steps


def _check_step(sig: Any, step: Any) -> None:
    """A clear error for a step a replacement cannot hold (see docs/canvas.md)."""
    if isinstance(step, group) and not step.tasks:
        raise ConfigurationError(f"replace() with {sig!r}: an empty group has nothing to run")
    if isinstance(step, Signature) and (step.subtask_type == "chunks" or step.name == CHUNKS_TASK):
        raise ConfigurationError(
            f"replace() with {sig!r}: chunks is a group of map tasks, which would have to be a "
            "chord's header (a group replacement runs celery.accumulate under the replaced id) "
            "and a celeriac chord's header holds tasks, chains and chords; replace with a task "
            "that sends the chunks, or with a group of tasks; see docs/canvas.md")


def _marks(request: Request) -> dict[str, Any]:
    """The replaced task's chord membership, as Celery marks a chain step's options."""
    if not request.chord:
        return {}
    return {"chord": request.chord, "group_id": request.group, "group_index": request.group_index}


def _send(app: Celeriac, request: Request, steps: list[Any]) -> None:
    """Send the replacement as a chain whose last task (a task, or a chord's body) has the
    replaced id, links and chord marks and is followed by the replaced task's chain; the
    first message carries the rest, a chord's body what follows the chord
    (:func:`celeriac.canvas.chains.folded`)."""
    whole: chain[Any] = chain(*steps, app=app)
    whole.set(task_id=request.id)
    for callback in request.callbacks or ():
        whole.link(from_dict(callback, app))
    for errback in request.errbacks or ():
        whole.link_error(from_dict(errback, app))
    frozen, _ = whole.frozen_steps()
    marks = _marks(request)
    last = frozen[-1]
    assert isinstance(last, Signature)  # _steps: a group at the end was made a chord
    message: MessageOptions = {"root_id": request.root_id}
    if isinstance(last, chord) and isinstance(last.body, group):
        if marks:
            raise ConfigurationError(
                f"replace() with {last!r} in a chord's header: a chord whose body is a group "
                "cannot take a chord header member's place in celeriac (its members have no "
                "one value to join with); see docs/canvas.md")
    elif isinstance(last, chord) and isinstance(last.body, Signature):  # marked (send_body)
        # A chain body: its last task ends the replacement, so it carries the marks.
        body: Any = last.body.tasks[-1] if isinstance(last.body, chain) else last.body
        body.options.update(marks)  # raw, unchecked
    elif len(frozen) > 1:  # a later chain step: marked in its dict (followups.chord_marks)
        last.options.update(marks)  # type: ignore[typeddict-item]  # raw, unchecked
    elif marks:  # the last task is the first message: its message is marked
        message.update({"chord": marks["chord"], "group": marks["group_id"],
                        "group_index": marks["group_index"]})
    _guard(app, frozen, request, marks)
    sent, rest = folded(frozen, request.chain or ())
    message["chain"] = rest or None
    first = sent[0]
    if isinstance(first, chord):
        first.apply_async()
    else:
        assert isinstance(first, Signature)  # _steps: a task or a chord first
        first.send(**message)


def _guard(app: Celeriac, frozen: list[Any], request: Request, marks: dict[str, Any]) -> None:
    """Add the ``celeriac.replace_failed`` errback to the steps whose failure would not reach
    the chord the replaced task belongs to (it, or the chain it is in, is a chord header
    member): those up to the last chord that is followed by a task, or before the final
    chord (and that one too when the chord is the one of the chain the task is in). The
    worker stores a failure under every later step's id, past chords too
    (:func:`celeriac.middleware.followups.chain_ids`), but joins a chord only from the
    failed task's own chain or from a failed chord's body's own marks, not from a step that
    travels in a later chord's body, so that chord would never complete."""
    from celeriac.middleware.followups import chord_marks

    onward = bool(request.chain and chord_marks(request.chain[0]))  # its chain is a member
    last = frozen[-1]
    if isinstance(last, chord):  # a failed final chord joins only from its body's marks
        guarded = frozen if onward else frozen[:-1]
    else:
        middle = [index for index, step in enumerate(frozen[:-1]) if isinstance(step, chord)]
        guarded = frozen[:middle[-1] + 1] if middle else []
    if not guarded or not (marks or onward):
        return
    ends: Any = last.body if isinstance(last, chord) and isinstance(last.body, Signature) else last
    final: Any = ends.tasks[-1] if isinstance(ends, chain) else ends
    name = str(final.name)
    errback: Signature[Any] = Signature(REPLACE_FAILED_TASK, (), {
        "task_id": request.id, "task_name": name, "chain": list(request.chain or ()) or None,
        "marks": marks or None}, app=app)
    for step in guarded:
        step.link_error(errback)


def _replace_failed(app: Celeriac, exc: BaseException, tb: str | None, task_id: str,
                    task_name: str, rest: list[dict[str, Any]], marks: dict[str, Any]) -> None:
    """A replacement failed before its last part: the failure stored under the replaced
    id and the ids of the replaced task's chain (before the join, which reads them; the
    worker stores the same failure again), and the chord either belonged to joined
    (Celery's ``_fail_chain``), so the chord fails naming the replaced task."""
    from celeriac.middleware.chords import Member, join
    from celeriac.middleware.followups import chain_ids, chord_marks
    from celeriac.worker.run import failure_record

    app.backend.store_many([failure_record(step_id, name, exc, tb=tb) for step_id, name
                            in [(task_id, task_name), *chain_ids(rest)]])
    members = [(task_id, {"options": marks})]  # the replaced task's chord
    if rest:  # a chain the replaced task was in, that is a header member: its last task's
        members.append((str(rest[0].get("options", {}).get("task_id")), rest[0]))
    for member_id, step in members:
        found = chord_marks(step)
        if found.get("group") and found.get("group_index") is not None:
            join(app, Member(str(found["group"]), int(found["group_index"] or 0), member_id,
                             dict(found.get("chord") or {})))


def register_builtins(app: Celeriac) -> None:
    """Register the tasks a replacement may run: ``celery.accumulate``, a group
    replacement's chord body (Celery's task), and ``celeriac.replace_failed``, the errback
    that passes a failure on to the replaced task (:func:`_guard`)."""
    from celeriac.task_options import TaskOptions

    def accumulate(*args: Any, index: int | None = None) -> Any:
        return args[index] if index is not None else list(args)

    def replace_failed(request: Any, exc: BaseException, traceback: str | None, *,
                       task_id: str, task_name: str, chain: list[dict[str, Any]] | None = None,
                       marks: dict[str, Any] | None = None) -> None:
        _replace_failed(app, exc, traceback, task_id, task_name, list(chain or ()), marks or {})

    app.add_task(accumulate, TaskOptions.check({"name": ACCUMULATE_TASK}), keep_existing=True)
    app.add_task(replace_failed, TaskOptions.check({"name": REPLACE_FAILED_TASK, "ignore_result": True}),
                 keep_existing=True)
