"""Follow-ups: what a message's ``embed`` asks for once its task has ended.

Protocol v2 messages carry ``callbacks`` (``link``), ``errbacks`` (``link_error``) and
``chain`` (the steps after this one, the next *last*) in their body; Celery's client
writes them for ``link=``, ``link_error=`` and chains. After a run:

* **success**: each callback is sent with the return value prepended to its arguments
  (unless immutable), then the next step of the chain, carrying the steps after it;
* **failure** (final: a retry is not one, its new message keeps the embed): every task
  still ahead in the chain gets the same FAILURE stored under its id, so a client
  waiting on the chain's last result hears of it; then the errbacks: an errback whose
  task is registered here, not bound, and takes more than one positional argument is
  called in this process as ``errback(request, exc, traceback)`` (Celery 5); any other
  is sent as a task with the failed task's id as its first argument (Celery's old style).

**At-least-once.** Follow-ups are sent in ``after_task``, before the task's own result is
stored and (with ``acks_late``) before its message is acked. A worker that dies in
between has its message delivered again, and the run sends the follow-ups again. They
go out under the *same* task ids: a chain's steps have ids fixed by the producer, and a
callback without one gets an id derived from the task's id and its position
(:func:`followup_id`), so a duplicate is the same task sent twice (it may run twice;
its result is stored under the one id). Without ``acks_late`` the message was acked
before the run, and a worker dying mid-run loses the task and its follow-ups, as in
Celery. A follow-up that cannot be sent (the broker failed, a signature cannot be
encoded) makes the run a FAILURE with that error, as Celery does, and the errbacks run.

A chord header member's ``chord`` embed is :mod:`celeriac.middleware.chords`' concern.

The check on the hot path is one truth test of three request attributes.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ExceptionInfo, TaskError
from celeriac.middleware.base import Middleware, TaskRun
from celeriac.states import FAILURE, SUCCESS

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import ResultRecord
    from celeriac.canvas.signatures import Signature
    from celeriac.context import Request
    from celeriac.task import MessageOptions

log = logging.getLogger("celeriac.worker")

#: The namespace of follow-up ids derived from their parent's (:func:`followup_id`).
FOLLOWUP_NAMESPACE = uuid.UUID("5f1d3c2e-8a47-4b7e-9c0a-1e6f0c2a9b31")


def followup_id(parent_id: str, kind: str, index: int) -> str:
    """The task id of the ``index``-th ``kind`` follow-up of ``parent_id``: the same on
    every run of the parent, so a follow-up sent again after a redelivery is the same task."""
    return str(uuid.uuid5(FOLLOWUP_NAMESPACE, f"{parent_id}:{kind}:{index}"))


def _with_id(sig: Any, parent_id: str, kind: str, index: int) -> Any:
    from celeriac.canvas.signatures import Signature

    if isinstance(sig, Signature) and sig.subtask_type is None and not sig.options.get("task_id"):
        sig.options["task_id"] = followup_id(parent_id, kind, index)
    return sig


class Followups(Middleware):
    """Sends callbacks and the next chain step, or runs errbacks (see the module doc)."""

    def after_task(self, run: TaskRun) -> None:
        request = run.request
        if not (request.callbacks or request.chain or request.errbacks):
            return
        record = run.record
        if record is None:
            return
        if record.status == SUCCESS:
            self._succeeded(run, record)
        elif record.status == FAILURE:
            self._failed(run, record)

    def _succeeded(self, run: TaskRun, record: ResultRecord) -> None:
        from celeriac.worker.run import failure_record

        request, app = run.request, run.task.app
        try:
            send_followups(app, request, run.retval)
        except Exception as exc:
            log.error("task %s[%s] succeeded but its callbacks or chain could not be sent: "
                      "%s: %s; recorded as a failure", run.task.name, request.id,
                      type(exc).__name__, exc)
            run.einfo = ExceptionInfo(exc)
            run.record = failure_record(request.id, run.task.name, exc, request.retries,
                                        tb=run.einfo.traceback)
            self._failed(run, run.record)
            return
        if request.children:  # the follow-ups are children of the task, as in Celery
            record.children = [child.as_tuple() for child in request.children]

    def _failed(self, run: TaskRun, record: ResultRecord) -> None:
        request, app = run.request, run.task.app
        exc = run.einfo.exception if run.einfo is not None else TaskError(
            record.exc_type or "Exception", record.exc_message or "", record.traceback)
        tb = run.einfo.traceback if run.einfo is not None else record.traceback
        try:
            _fail_chain(app, request, record, exc, tb)
        except Exception:
            log.exception("task %s[%s] failed and the results of its chain's later tasks "
                          "could not be stored", run.task.name, request.id)
        for index, item in enumerate(request.errbacks or ()):
            try:
                run_errback(app, request, item, index, exc, tb)
            except Exception:
                log.exception("errback %r of task %s[%s] raised", item, run.task.name, request.id)


def send_followups(app: Celeriac, request: Request, retval: Any) -> None:
    """Send the callbacks (``retval`` first in their arguments) and the next chain step."""
    from celeriac.canvas.signatures import from_dict

    for index, item in enumerate(request.callbacks or ()):
        sig = _with_id(from_dict(item, app), request.id, "link", index)
        sig.apply_async((retval,))
    if request.chain:
        from celeriac.canvas.signatures import Signature

        rest = list(request.chain)
        raw = rest.pop()
        step = from_dict(raw, app)
        if isinstance(step, Signature) and step.subtask_type is None:
            options = chord_marks(raw)
            options["chain"] = rest or None
            step.merged((retval,)).send(**options)
        else:  # a group or map ending a chain Celery's client wrote
            step.apply_async((retval,))


def chord_marks(step: Any) -> MessageOptions:
    """The chord a chain step's dict is the last task of a header member of (Celery's
    marks: ``chord``, ``group_id``, ``group_index`` in its options), as message options;
    empty for any other step."""
    options = step.get("options") if isinstance(step, dict) else None
    if not isinstance(options, dict) or not isinstance(options.get("chord"), dict):
        return {}
    return {"chord": options["chord"], "group": options.get("group_id"),
            "group_index": options.get("group_index")}


def _fail_chain(app: Celeriac, request: Request, record: ResultRecord, exc: BaseException,
                tb: str | None) -> None:
    """The failure stored under each later step's id (Celery's ``_fail_chain``), and the
    task's own stored now, before errbacks that may read it run (a worker's run: an eager
    one stores only as ``task_store_eager_result`` says)."""
    from celeriac.worker.run import failure_record

    records = [failure_record(task_id, name, exc, tb=tb)
               for task_id, name in chain_ids(request.chain or ())]
    if request.errbacks and not request.ignore_result and not request.is_eager:
        records.append(record)
    if records:
        app.backend.store_many(records)


def chain_ids(steps: Any) -> list[tuple[str, Any]]:
    """(task id, task name) of every task in these chain steps whose id is fixed; a group's
    members stand for it (its own id names no task); a chord's id is its body's, and the
    steps after a chord, which travel in its body's options (``chains.folded``), follow it
    (Celery 5.7's ``_fail_chain`` descends into a chord's body too)."""
    found: list[tuple[str, Any]] = []
    for step in steps:
        if not isinstance(step, dict) or not isinstance(step.get("options"), dict):
            continue
        if step.get("subtask_type") == "group":
            found.extend(chain_ids((step.get("kwargs") or {}).get("tasks") or ()))
        elif isinstance(step["options"].get("task_id"), str):
            found.append((step["options"]["task_id"], step.get("task")))
        body = (step.get("kwargs") or {}).get("body") if step.get("subtask_type") == "chord" else None
        if isinstance(body, dict) and isinstance(body.get("options"), dict):
            found.extend(chain_ids(body["options"].get("chain") or ()))
    return found


def run_errback(app: Celeriac, request: Request, item: Any, index: int, exc: BaseException,
             tb: str | None) -> None:
    from celeriac.canvas.signatures import Signature, from_dict

    sig = from_dict(item, app)
    task = app.tasks.get(sig.name) if isinstance(sig, Signature) else None
    if task is not None and sig.subtask_type is None and _new_style(task.fn, sig):
        if sig.immutable:
            task(*sig.args, **sig.kwargs)
        else:
            task(request, exc, tb, *sig.args, **sig.kwargs)
        return
    sig = _with_id(sig, request.id, "link_error", index)
    if request.is_eager:
        sig.apply((request.id,))
    else:
        sig.apply_async((request.id,))


def _new_style(fn: Any, sig: Signature[Any]) -> bool:
    """Whether an errback takes ``(request, exc, traceback)``: its function accepts more
    than one positional argument besides those the signature binds (Celery's
    ``arity_greater``); a bound task never does (Celery sends it the task id)."""
    from celeriac.task import Task

    task = sig.task if sig.task is not None else sig.app.tasks.get(sig.name)
    if isinstance(task, Task) and task.options.bind:
        return False
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not sig.immutable:
        positional = [p for p in positional[len(sig.args):] if p.name not in sig.kwargs]
    return len(positional) > 1
