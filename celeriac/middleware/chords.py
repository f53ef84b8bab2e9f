"""Chords in the worker: the header member that completes a chord sends its body, once.

The protocol is ``docs/canvas-chords.md``; in short, for a message that is a chord
header member (its ``chord`` embed holds the body, ``group`` the chord's id,
``group_index`` its position):

* its result is stored even under ``ignore_result`` (the body is built from it);
* after the results middleware stored it, and before the message is acked, it *joins*
  the chord in the result backend (one atomic step); the one call told "fire" reads the
  members' results in header order and sends the body with their values first in its
  arguments, under the body's frozen task id, with a claim header carrying a fresh
  token, then marks the chord done. A member that did not succeed fails the chord
  instead: :class:`ChordError` naming it is stored as the body's result and the body's
  errbacks run. A join or send that fails turns the outcome into RETRY_LATER: the
  member comes back, joins again and, being the firing index, fires again;
* a header member that is a chain joins from its last task (which carries the chord,
  as Celery marks it), or, when the chain stops at a failed step, from that step;
* a message carrying the claim header (a body) claims its run before running: a second
  copy of the body, sent by a firing member that died before marking the chord done,
  is acked unrun. A claim the backend cannot answer puts the body back in its queue,
  unrun and uncharged (:class:`~celeriac.exceptions.RunLater`), rather than risk two runs;
* a member its own process cannot end (killed past its hard time limit, terminated, or
  lost with its process on its last delivery) is failed by the supervisor, which joins
  it to its chord as here (:mod:`celeriac.worker.attribution`).

Without polling: no ``chord_unlock`` task, the body goes out as the last member settles.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import CeleriacError, ChordError, RunLater
from celeriac.message import CHORD_CLAIM_HEADER
from celeriac.middleware.base import ACK, DEAD, RETRY_LATER, SETTLED, Finished, Middleware, Outcome
from celeriac.middleware.followups import chord_marks
from celeriac.states import FAILURE, IGNORED, READY_STATES, REVOKED, SUCCESS

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.backends.base import ResultRecord
    from celeriac.canvas.signatures import Signature
    from celeriac.context import Request
    from celeriac.middleware.base import TaskRun
    from celeriac.result import EagerResult

log = logging.getLogger("celeriac.worker")

#: Seconds before a body whose claim could not be checked (the result backend failed)
#: is delivered again: it waits, unrun and uncharged, for as long as the backend is down.
CLAIM_RETRY_DELAY = 2.0


@dataclass(frozen=True, slots=True)
class Member:
    """A finished chord header member waiting for its message to settle."""

    group_id: str
    index: int
    task_id: str
    body: dict[str, Any]


def chord_size(app: Celeriac, body: dict[str, Any], group_id: str) -> int | None:
    """The header's size: the body's ``chord_size`` (celeriac's client writes it), else
    what Celery's client recorded in a Redis result backend on this server; None (with an
    ERROR line: the chord cannot complete) when neither says."""
    size = body.get("chord_size")
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        size = app.backend.celery_chord_size(group_id)
    if size is not None and size > 0:
        return int(size)
    log.error("chord %s: its header's size is unknown (no chord_size in the body, no size "
              "recorded by Celery's client in this Redis result backend), so its body "
              "cannot be sent (docs/canvas.md)", group_id)
    return None


class Chords(Middleware):
    """Joins finished chord header members and sends bodies; claims bodies before they run."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        #: delivery id -> the member it carries, from its run's end to its settling.
        self.pending: dict[str, Member] = {}

    def message_received(self, run: TaskRun) -> None:
        if run.request.chord:  # a member's result is what its body is built from
            run.ignore_result = False

    def check_run(self, run: TaskRun) -> ResultRecord | None:
        headers = run.request.headers
        claim = headers.get(CHORD_CLAIM_HEADER) if headers else None
        if not claim:
            return None
        group_id, token = str(claim[0]), str(claim[1])
        try:
            claimed = self.app.backend.chord_claim_body(group_id, token, expires=self.expires())
        except (CeleriacError, OSError) as exc:
            # Unclaimed, a second copy could run too: neither runs until the backend answers.
            raise RunLater(f"chord {group_id}: cannot claim its body's run: {exc}",
                           delay=CLAIM_RETRY_DELAY) from exc
        if claimed:
            return None
        from celeriac.backends.base import ResultRecord

        log.info("chord %s: body %s[%s] was already claimed by another copy; not running "
                 "this one", group_id, run.task.name, run.request.id)
        run.ignore_result = True  # the copy that runs stores the result
        return ResultRecord(task_id=run.request.id, status=IGNORED, name=run.task.name)

    def task_skipped(self, run: TaskRun) -> None:
        self._finished(run)  # a revoked member still joins, or its chord never completes

    def after_task(self, run: TaskRun) -> None:
        self._finished(run)

    def _finished(self, run: TaskRun) -> None:
        if run.delivery is None or run.record is None:
            return
        member = member_of(run.request, run.record)
        if member is not None:
            self.pending[run.delivery.id] = member

    def expires(self) -> float | None:
        value = self.app.conf["result_chord_expires"]
        return float(value) if value is not None else None

    def before_settle(self, batch: list[Finished]) -> list[Finished]:
        if not self.pending:
            return batch
        settled: list[Finished] = []
        for delivery, outcome in batch:
            member = self.pending.pop(delivery.id, None)
            if member is not None and outcome.action in (ACK, DEAD, SETTLED):
                try:
                    self._join(member)
                except (CeleriacError, OSError) as exc:
                    log.error("chord %s: member %s could not join or send the body: %s; its "
                              "message will be delivered again", member.group_id,
                              member.task_id, exc)
                    if outcome.action != SETTLED:
                        outcome = Outcome(RETRY_LATER, str(exc), outcome.ran)
            settled.append((delivery, outcome))
        return settled

    def _join(self, member: Member) -> None:
        join(self.app, member)


def member_of(request: Request, record: ResultRecord) -> Member | None:
    """The chord a task that ended with ``record`` joins now, if any: its own, or, for a
    header member that is a chain stopped before its last task, the chain's (that task
    never runs, so the chord hears of the failure, stored under its id, from here)."""
    if record.status not in READY_STATES:
        return None
    if request.chord:
        if request.group and request.group_index is not None:
            return Member(request.group, int(request.group_index), request.id, request.chord)
    elif request.chain and record.status != SUCCESS:
        last = request.chain[0]
        marks = chord_marks(last)
        if marks.get("group") and marks.get("group_index") is not None:
            return Member(str(marks["group"]), int(marks["group_index"] or 0),
                          str(last["options"].get("task_id")), dict(marks["chord"] or {}))
    return None


def join(app: Celeriac, member: Member) -> None:
    """Add a finished member to its chord (one atomic step); the call told "fire" sends
    the body (or fails it) and marks the chord done."""
    backend = app.backend
    size = chord_size(app, member.body, member.group_id)
    if size is None:
        return
    expires = app.conf["result_chord_expires"]
    if not backend.chord_join(member.group_id, member.index, member.task_id, size,
                              expires=float(expires) if expires is not None else None):
        return
    ids = backend.chord_members(member.group_id) or []
    records = backend.get_many(ids)
    fire_body(app, member.group_id, member.body, ids, records)
    backend.chord_done(member.group_id)


def fire_body(app: Celeriac, group_id: str, body: dict[str, Any], ids: list[str],
              records: list[ResultRecord | None]) -> None:
    """Send the body with the members' values, or fail it with the first failed member."""
    token = uuid.uuid4().hex
    for member_id, record in zip(ids, records, strict=True):
        if record is None or record.status != SUCCESS:
            status = record.status if record is not None else "missing"
            body_failed(app, body, member_id, status, _error_of(record), eager=False)
            return
    values = [record.result for record in records if record is not None]
    send_body(app, body, values, [group_id, token])


def send_body(app: Celeriac, body: dict[str, Any], values: list[Any],
              claim: list[str] | None) -> None:
    """Send a chord's body with the header's values. A body carries, raw in its options,
    what follows its chord: the rest of a chain (a chain body's other steps, a chord
    followed by more steps, or one that replaced a task with ``Task.replace``) and the
    chord marks of a replaced task or an inner chord. A group body's members all go in
    one broker call, with the same claim (:func:`celeriac.canvas.chords.send_group_body`)."""
    from celeriac.canvas.chords import body_parts, send_group_body
    from celeriac.canvas.signatures import from_dict

    if body.get("subtask_type") == "group":
        send_group_body(app, body, values, claim)
        return
    [part] = body_parts(app, body)  # a task, or a chain's first task (Celery's client)
    call = from_dict(part, app).merged((values,))
    options = part.get("options") or {}
    rest = options.get("chain") if isinstance(options, dict) else None
    call.send(chord_claim=claim, chain=rest or None, **chord_marks(part))


def body_failed(app: Celeriac, body: dict[str, Any], member_id: str, status: str, error: Any,
                *, eager: bool) -> Any:
    """Fail a chord's body (:func:`chord_failed`): each message it is sent as (one, or
    one per member of a group body) gets the :class:`ChordError` and runs its errbacks
    once. Eager: the body's result (a :class:`GroupResult` for a group body)."""
    from celeriac.canvas.chords import body_parts
    from celeriac.canvas.signatures import from_dict

    results = [chord_failed(app, from_dict(part, app), member_id, status, error, eager=eager,
                            onward=part)
               for part in body_parts(app, body)]
    if body.get("subtask_type") != "group":
        return results[0]
    from celeriac.result import GroupResult

    group_id = (body.get("options") or {}).get("task_id")
    return GroupResult(group_id, [r for r in results if r is not None], app=app) if eager else None


def _error_of(record: ResultRecord | None) -> str:
    if record is None:
        return "its result expired or was never stored"
    if record.status in (FAILURE, REVOKED):
        return f"{record.exc_type}({record.exc_message!r})"
    return record.status


def chord_failed(app: Celeriac, body: Signature[Any], member_id: str, status: str, error: Any,
                 *, eager: bool, onward: dict[str, Any] | None = None
                 ) -> EagerResult[Any] | None:
    """Fail the chord whose member ``member_id`` did not succeed: a :class:`ChordError`
    naming it stored as the body's result (Celery's ``Dependency <id> raised <exc>``),
    then the body's errbacks. Eager (``chord.apply``): nothing stored, the result returned.
    ``onward``: the body's dict, whose raw options may carry what follows it (a chain
    body's other steps, the steps after the chord, or what followed a task the chord
    replaced with ``Task.replace``): that chain fails and the chord it is a member of joins."""
    from celeriac.canvas.signatures import wire_links
    from celeriac.context import Request
    from celeriac.middleware.followups import run_errback
    from celeriac.result import EagerResult
    from celeriac.worker.run import failure_record

    body_id = str(body.options.get("task_id") or uuid.uuid4())
    shown = error if isinstance(error, str) else repr(error)
    exc = ChordError(f"Dependency {member_id} raised {shown}" if status != "missing"
                     else f"Dependency {member_id}: {shown}")
    record = failure_record(body_id, body.name, exc)
    if not eager:
        app.backend.store_many([record])
    request = Request(id=body_id, task=body.name, args=list(body.args), kwargs=dict(body.kwargs),
                      is_eager=eager, errbacks=wire_links(body.options.get("link_error")))
    for index, item in enumerate(request.errbacks or ()):
        try:
            run_errback(app, request, item, index, exc, record.traceback)
        except Exception:
            log.exception("errback %r of chord body %s[%s] raised", item, body.name, body_id)
    if onward is not None and not eager:
        _fail_onward(app, onward, body_id, exc)
    return EagerResult(body_id, app, record) if eager else None


def _fail_onward(app: Celeriac, body: dict[str, Any], body_id: str, exc: BaseException) -> None:
    """What followed a replaced task, when its replacing chord failed: the later tasks of
    its chain get the failure (as a failed chain step's do) and its own chord is joined,
    which then fails naming the replaced task."""
    from celeriac.middleware.followups import chain_ids
    from celeriac.worker.run import failure_record

    options = body.get("options") or {}
    rest = options.get("chain") if isinstance(options, dict) else None
    if rest:
        app.backend.store_many([failure_record(task_id, name, exc)
                                for task_id, name in chain_ids(rest)])
    # The chord it is a member of: its own marks, or those of the last step it carries
    # (an inner chord's chain body), whose id the failure was stored under above.
    marks, member_id = chord_marks(body), body_id
    if not marks and rest:
        marks, member_id = chord_marks(rest[0]), str(rest[0]["options"].get("task_id"))
    if marks.get("group") and marks.get("group_index") is not None:
        join(app, Member(str(marks["group"]), int(marks["group_index"] or 0), member_id,
                         dict(marks["chord"] or {})))
