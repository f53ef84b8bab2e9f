"""``chord``: a group (the header) whose results, in order, are sent to its body.

``chord(header, body)``, ``chord(header)(body)``, or a group followed by a task in a
chain (``group(...) | tsum.s()``). Sending a chord sends its header as one group whose
messages each carry the body in their ``chord`` embed, the chord's id in ``group`` and
their position in ``group_index`` (Celery's protocol v2 form). There is no
``chord_unlock`` task: the worker that finishes the last header member sends the body,
exactly once, through the result backend's atomic join (:mod:`celeriac.middleware.chords`,
``docs/canvas-chords.md``).

A header member may be a chain: it is sent as its first task, and its last task carries
the chord (:meth:`chain.as_head`); or a chord, whose body is then the member
(:func:`_inner`). The body may be a task, a chain or a group (:func:`_travelling`):
a chain travels as its first task carrying the others raw in its options (``chain``),
as the steps after a chord in a chain do (:func:`celeriac.canvas.chains.folded`); a
group travels as its dict, every member's id fixed, and each member is sent with the
header's values (:func:`send_group_body`). An inner chord's header goes out in its outer
header's broker call, and a chord in a group in the group's (:meth:`chord.messages`).
Refused when the chord is built, naming the limit: a map as a header member, and a chord
(or map) as the body.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from celeriac.canvas.groups import _chain_heads, group
from celeriac.canvas.signatures import Signature, from_dict, links, wire_options
from celeriac.exceptions import ConfigurationError
from celeriac.result import AsyncResult, EagerResult, GroupResult
from celeriac.states import SUCCESS
from celeriac.task import check_send_options

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.app import Celeriac
    from celeriac.canvas.chains import chain
    from celeriac.task import SendOptions

R = TypeVar("R")

#: What follows a chord, raw in its body's options, kept when the chord travels as a dict
#: (a chain step): the steps after it in a chain (``chain``, :func:`chains.folded`) and,
#: when it replaced a chord header member (``Task.replace``), that member's chord marks.
ONWARD_KEYS = ("chain", "chord", "group_id", "group_index")
#: A chord's body: a task, a chain or a group.
Body = Signature[Any] | group[Any]
#: What a chord's ``apply_async`` returns: its body's result (a group body's GroupResult).
BodyResult = AsyncResult[Any] | GroupResult[Any]


def _plain(sig: Any) -> bool:
    return isinstance(sig, Signature) and sig.subtask_type is None


def _header_member(sig: Any) -> Signature[Any]:
    """``sig`` if it is a task, a chain or a chord; a clear error for what celeriac's
    chord header does not hold."""
    if not isinstance(sig, Signature):
        raise TypeError(f"a chord's header member is a signature (task.s(...)), not "
                        f"{type(sig).__name__}")
    if sig.subtask_type not in (None, "chain", "chord"):
        raise ConfigurationError(
            f"chord header member {sig!r} is a {sig.subtask_type}: celeriac's chord header "
            f"holds tasks, chains and chords, not a {sig.subtask_type} (put its tasks in the "
            f"header itself); see docs/canvas.md")
    return sig


def _body(sig: Any) -> Body:
    """``sig`` if it is a task, a chain led by a task, or a group of tasks and chains of
    tasks; a clear error for what celeriac's chord body cannot be."""
    if isinstance(sig, group):
        if not sig.tasks:
            raise ConfigurationError("an empty group as a chord's body has nothing to run")
        for member in sig.tasks:
            steps = getattr(member, "tasks", [member]) if member.subtask_type == "chain" else [member]
            if not all(_plain(step) for step in steps):
                raise ConfigurationError(
                    f"chord body {sig!r} holds {member!r}: celeriac sends a group body's "
                    "members with the header's values, so each is a task or a chain of "
                    "tasks; see docs/canvas.md")
        return sig
    if not isinstance(sig, Signature):
        raise TypeError(f"a chord's body is a signature (task.s(...)), not {type(sig).__name__}")
    if sig.subtask_type == "chain" and getattr(sig, "tasks", None) and _plain(sig.tasks[0]):  # type: ignore[attr-defined]
        return sig
    if sig.subtask_type is not None:
        kind = sig.subtask_type if sig.subtask_type != "chain" else "chain not led by a task"
        raise ConfigurationError(
            f"chord body {sig!r} is a {kind}: celeriac's chord body is a task, a chain "
            f"starting with a task or a group, not a {kind}; see docs/canvas.md")
    return sig


def _fix_ids(body: Body, task_id: str | None) -> None:
    """Fix every task id of ``body`` in place (kept if it has them): the chord's result,
    returned before anything is sent, names them, and a chord frozen once sends them.
    ``task_id``: the id of the body's result (its last task's, a group body's group id)."""
    if isinstance(body, group):
        for member in body.tasks:
            if member.subtask_type == "chain":
                _fix_ids(member, None)
        body.group_id = body.group_id or task_id
        body.freeze()
        return
    if body.subtask_type != "chain":
        body.freeze(task_id)
        return
    steps: list[Any] = cast("chain[Any]", body).tasks
    last_id = body.options.get("task_id") or task_id
    for index, step in enumerate(steps):
        final = index == len(steps) - 1
        if isinstance(step, group):
            step.group_id = step.group_id or (last_id if final else None)
            step.freeze()
        else:
            step.freeze(last_id if final else None)
    last = steps[-1]
    body.options["task_id"] = last.group_id if isinstance(last, group) else last.options["task_id"]


#: Celery's chord marks on a chain step's options (see ``followups.chord_marks``).
CHORD_MARKS = ("chord", "group_id", "group_index")


class _GroupBody(Signature[Any]):
    """A chord's body that is a group, as it travels: the group's dict, its id (and every
    member's) fixed, with options a sender may add to."""

    subtask_type = "group"

    def __init__(self, body: group[Any]) -> None:
        super().__init__("celery.group", app=body.app)
        self.group = body
        self.options = {"task_id": body.group_id} if body.group_id else {}

    def to_dict(self) -> dict[str, Any]:
        if self.options.get("chain") or any(key in self.options for key in CHORD_MARKS):
            # Set by Task.replace: nothing would send the chain on or join the chord.
            raise ConfigurationError(f"a chord whose body is {self.group!r} cannot be followed "
                                     "by more steps or be a chord's header member in celeriac "
                                     "(see docs/canvas.md)")
        wire = self.group.to_dict()
        wire["options"] = {**wire["options"], **self.options}
        return wire


class _ChainBody(Signature[Any]):
    """A chord's body that is a chain, as it travels: its first task, whose options'
    ``chain`` (raw, the next step last) holds what follows the body (the steps after the
    chord, set by a chain or by ``Task.replace``) and gets the chain's other steps before
    them; chord marks set on it (an inner chord's, a replaced task's) go to the chain's
    last task, which ends the body."""

    def __init__(self, first: Signature[Any], rest: list[dict[str, Any]]) -> None:
        super().__init__(first.task if first.task is not None else first.name, first.args,
                         first.kwargs, app=first.app, immutable=first.immutable)
        self.options = {**first.options}
        self.rest = rest

    def to_dict(self) -> dict[str, Any]:
        wire = super().to_dict()
        options = wire["options"]
        after = options.pop("chain", None) or []
        marks = {key: options.pop(key) for key in CHORD_MARKS if key in options}
        rest = [{**step, "options": dict(step["options"])} for step in self.rest]
        last = rest[0]
        if (after or marks) and last.get("subtask_type") is not None:
            raise ConfigurationError(f"a chord whose body ends in a {last['subtask_type']} cannot "
                                     "be followed by more steps or be a chord's header member "
                                     "in celeriac (see docs/canvas.md)")
        last["options"].update(marks)
        options["chain"] = [*after, *rest]
        return wire


def _travelling(body: Body) -> tuple[Signature[Any], BodyResult]:
    """The body as the header's messages carry it, and its result (each one's ``parent``
    the one before, the first's None): a task as it is; a group as :class:`_GroupBody`;
    a chain as :class:`_ChainBody`, its first task carrying the other steps raw in its
    options (``chain``), then the steps after the chord (the chain's own ``chain``
    option, given by :meth:`chord.carry`; to the body's last chord if it ends in one)."""
    if isinstance(body, group):
        members = [_travelling(member)[1] if member.subtask_type == "chain" else member.freeze()
                   for member in body.tasks]
        body.group_id = body.group_id or str(uuid.uuid4())
        return _GroupBody(body), GroupResult(body.group_id, members, app=body.app)  # type: ignore[arg-type]
    if body.subtask_type != "chain":
        return body, body.freeze()
    from celeriac.canvas.chains import folded

    whole = cast("chain[Any]", body)
    after: list[dict[str, Any]] = whole.options.pop("chain", None) or []  # type: ignore[typeddict-item]
    frozen, results = whole.frozen_steps()
    steps, _ = folded(frozen)
    first, last = steps[0], steps[-1]
    if not _plain(first):
        raise ConfigurationError(f"chord body {body!r} does not start with a task (see docs/canvas.md)")
    if after and isinstance(last, chord):
        last.carry(after)  # the body's last step is a chord: its own body sends them on
        after = []
    elif after and isinstance(last, group):
        raise ConfigurationError(f"a chord whose body {body!r} ends in a group cannot be "
                                 "followed by more steps in celeriac (see docs/canvas.md)")
    sent = cast("Signature[Any]", first)
    if after:
        sent.options["chain"] = after  # type: ignore[typeddict-unknown-key]  # raw, next step last
    if len(steps) == 1:
        return sent, results[-1]
    return _ChainBody(sent, [step.to_dict() for step in reversed(steps[1:])]), results[-1]


def top_of(result: Any) -> Any:
    """The first result up ``result``'s ``parent`` links (a chord's: its header's)."""
    seen: set[int] = set()
    while result.parent is not None and id(result) not in seen:
        seen.add(id(result))
        result = result.parent
    return result


class _Marked(Signature[Any]):
    """A message as it is sent with marks its signature cannot hold: a header member's
    chord (body, position), a group body member's claim."""

    def __init__(self, member: Signature[Any], marks: dict[str, Any]) -> None:
        super().__init__(member.task if member.task is not None else member.name, member.args,
                         member.kwargs, app=member.app, immutable=member.immutable)
        self.options = {**member.options}
        self.member = member
        self.marks = marks

    def resolved_options(self) -> SendOptions:
        return {**self.member.resolved_options(), **self.marks}  # type: ignore[typeddict-item]


class chord(Signature[R]):  # lower case: Celery's name, and it is used like a function
    """A header group whose results, in header order, are the first argument of the body.

    ``apply_async()`` returns the body's result: its last task's for a chain body (each
    step's ``parent`` the one before), a :class:`GroupResult` for a group body; the first
    one's ``parent`` is the header's :class:`GroupResult`. ``task_id=`` is that result's
    id. Arguments given when sent go to every header member; other options too, except
    ``link``/``link_error``, which go to the body (Celery's ``chord.link``). A failing
    header member fails the chord with :class:`ChordError` naming it, stored as the
    body's result (each member's, for a group body; every step's, for a chain); the
    body's errbacks run.
    """

    subtask_type = "chord"

    def __init__(self, header: group[Any] | Iterable[Signature[Any]],
                 body: Signature[R] | group[Any] | None = None, *, app: Celeriac | None = None,
                 **options: Unpack[SendOptions]) -> None:
        self.header: group[Any] = header.clone() if isinstance(header, group) else group(list(header))
        for member in self.header.tasks:
            _header_member(member)
        # A chain or group body is copied: freezing fixes its ids in place.
        self.body: Body | None = None
        if body is not None:
            self.body = _body(body) if _plain(body) else _body(body).clone()
        if app is None:
            if not self.header.tasks and body is None:
                raise ConfigurationError("an empty chord without a body needs app=...")
            app = self.header.tasks[0].app if self.header.tasks else cast("Body", body).app
        super().__init__("celery.chord", app=app)
        if options:
            self.set(**options)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    # -- copies ----------------------------------------------------------------------------
    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Unpack[SendOptions]) -> chord[R]:
        return self.merged(args, kwargs, options)

    def merged(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
               options: SendOptions | None = None) -> chord[R]:
        """A copy whose header members get ``args``/``kwargs``; ``options`` for the chord."""
        check_send_options(options or {})
        header = self.header.merged(args, kwargs) if (args or kwargs) else self.header.clone()
        copy: chord[R] = chord(header, self.body.clone() if self.body is not None else None,
                               app=self.app)
        copy.options = {**self.options}
        if options:
            copy.set(**options)
        return copy

    def carry(self, rest: list[dict[str, Any]]) -> None:
        """Give the steps after this chord in a chain (raw, the next step last) to its
        body, which sends them on (:func:`celeriac.canvas.chains.folded`)."""
        if not isinstance(self.body, Signature):
            raise ConfigurationError(f"{self!r} followed by more steps in a chain: a chord "
                                     "whose body is a group cannot be followed by more steps "
                                     "in celeriac (see docs/canvas.md)")
        self.body.options["chain"] = rest  # type: ignore[typeddict-unknown-key]

    # -- freezing ----------------------------------------------------------------------------
    def _linked_body(self, *, in_place: bool = False) -> Body:
        """The body, its ids fixed (in place when freezing), copied with the chord's links."""
        if self.body is None:
            raise ConfigurationError(f"{self!r} has no body: chord(header, body) or chord(header)(body)")
        body = self.body if in_place else self.body.clone()
        _fix_ids(body, self.options.get("task_id"))
        body = body.clone()
        for callback in links(self.options.get("link"), self.app):
            body.link(callback)
        for errback in links(self.options.get("link_error"), self.app):
            body.link_error(errback)
        return body

    def freeze(self, _id: str | None = None) -> AsyncResult[R]:
        """Fix the chord's id (its header's group id) and the body's task ids now; the
        body's result, leading back to the header's :class:`GroupResult` by ``parent``."""
        if _id and not self.options.get("task_id"):
            self.options["task_id"] = _id
        _, result = _travelling(self._linked_body(in_place=True))
        self.options["task_id"] = str(result.id)
        top_of(result).parent = self.header.freeze()
        return cast("AsyncResult[R]", result)

    # -- sending and running ---------------------------------------------------------------
    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    body: Signature[Any] | group[Any] | None = None,
                    **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """Send the header, each member carrying the body; return the body's result.
        Under ``task_always_eager`` the chord runs here (:meth:`apply`)."""
        check_send_options(options, "chord.apply_async")
        whole = self.merged(None, None, options) if options else self
        if body is not None:
            whole.body = _body(body)
        if self.app.conf["task_always_eager"]:
            return whole.apply(args, kwargs)
        body_sig, result, group_id = whole._prepared()
        if whole.header.group_id is not None and getattr(self, "_sent", False):
            # Applied again under the same (frozen) group id: a new run of the chord.
            self.app.backend.chord_forget(group_id)
        self._sent = True
        top_of(result).parent = self._send_header(whole, body_sig, group_id, args, kwargs)
        return cast("AsyncResult[R]", result)

    def _prepared(self) -> tuple[Signature[Any], BodyResult, str]:
        """The body ready to travel (links, ids fixed), its result and the chord's group id."""
        body_sig, result = _travelling(self._linked_body())
        self.header.group_id = self.header.group_id or str(uuid.uuid4())
        return body_sig, result, self.header.group_id

    def body_and_header(self) -> tuple[Signature[Any], str]:
        """The body ready to travel (links, frozen ids) and the chord's group id."""
        body_sig, _, group_id = self._prepared()
        return body_sig, group_id

    def _send_header(self, whole: chord[R], body_sig: Signature[Any], group_id: str,
                     args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
                     ) -> GroupResult[Any]:
        """Send the header (inner chords' headers with it) in one broker call: all or none."""
        calls, header = self._header_calls(whole, body_sig, group_id, args, kwargs)
        if calls:
            self.app.send_many(calls, group_id=group_id, chunk_size=None)
        return header

    def _header_calls(self, whole: chord[R], body_sig: Signature[Any], group_id: str,
                      args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
                      ) -> tuple[list[Signature[Any]], GroupResult[Any]]:
        """The header's messages, each naming its group (an inner chord's header members
        among them), and the header's :class:`GroupResult`, every id fixed before anything
        is sent, so a group holding chords or a chord of chords goes out in one call."""
        header_options = {k: v for k, v in whole.options.items()
                          if k not in ("link", "link_error", "task_id")}
        members = [task.merged(args, kwargs, header_options)  # type: ignore[arg-type]
                   for task in whole.header.tasks]
        if not members:  # Celery's: an empty header calls the body at once, with []
            from celeriac.middleware.chords import send_body

            send_body(self.app, body_sig.to_dict(), [], None)
            return [], GroupResult(group_id, [], app=self.app)
        from celeriac.canvas.chains import chain

        body_dict = body_sig.to_dict()
        body_dict["chord_size"] = len(members)  # Celery's key; its workers read it too
        calls: list[Signature[Any]] = []
        found: list[Any] = []
        for index, member in enumerate(members):
            marks = {"chord": body_dict, "group_index": index}
            if isinstance(member, chord):
                inner_calls, result = _inner(member, {**marks, "group_id": group_id})
                calls.extend(inner_calls)
            elif isinstance(member, chain):
                head, result = member.as_head(last_marks={**marks, "group_id": group_id})
                calls.append(_Marked(head, {"group": group_id}))
            else:
                result = member.freeze()
                calls.append(_Marked(member, {**marks, "group": group_id}))
            found.append(result)
        return calls, GroupResult(group_id, found, app=self.app)

    def messages(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None
                 ) -> tuple[list[Signature[Any]], BodyResult]:
        """What sending this chord publishes (its header's messages, each naming its
        group), every id fixed, and its result: for a group holding it to send them in its
        own broker call (:meth:`group.apply_async`)."""
        body_sig, result, group_id = self._prepared()
        calls, header = self._header_calls(self, body_sig, group_id, args, kwargs)
        top_of(result).parent = header
        return calls, result

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Unpack[SendOptions]) -> EagerResult[R]:
        """Run the header here, then the body with its values; a failed member makes the
        body's result a :class:`ChordError` (stored nowhere) and runs its errbacks."""
        whole = self.merged(None, None, options) if options else self
        body = whole._linked_body()
        group_id = whole.header.group_id or str(uuid.uuid4())
        header = GroupResult(group_id, [task.apply(args, kwargs) for task in whole.header.tasks],
                             app=self.app)
        failed = next((r for r in header.results if r.status != SUCCESS), None)
        if failed is None:
            result: Any = body.apply(([r.result for r in header.results],))
        else:
            from celeriac.middleware.chords import body_failed

            result = body_failed(self.app, _travelling(body)[0].to_dict(), failed.id,
                                 failed.status, failed.result, eager=True)
        top_of(result).parent = header
        return cast("EagerResult[R]", result)

    def __call__(self, body: Signature[Any] | group[Any] | None = None,  # type: ignore[override]
                 **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """``chord(header)(body)`` sends it, as in Celery."""
        return self.apply_async(None, None, body=body, **options)

    # -- the wire form --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Celery's dict form (``subtask_type: "chord"``, header and body in ``kwargs``)."""
        return {"task": "celery.chord", "args": [],
                "kwargs": {"header": self.header.to_dict(),
                           "body": self.body.to_dict() if self.body is not None else None,
                           "kwargs": {}},
                "options": Signature.to_dict(self)["options"], "subtask_type": "chord",
                "immutable": False}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celeriac | None = None) -> chord[Any]:
        """A chord rebuilt from its dict form (one Celery's client wrote, or ours)."""
        kwargs = d.get("kwargs") or {}
        header = kwargs.get("header")
        tasks = header if isinstance(header, list) else from_dict(header or {}, app)
        body = kwargs.get("body")
        rebuilt: chord[Any] = chord(
            tasks if isinstance(tasks, group) else [from_dict(t, app) for t in tasks],
            from_dict(body, app) if body else None, app=app)
        rebuilt.set(**wire_options(d.get("options") or {}, "celery.chord"))
        raw = body.get("options") if isinstance(body, dict) else None
        if isinstance(raw, dict) and rebuilt.body is not None and raw.get("chain"):
            rebuilt.carry(raw["chain"])  # the steps after it in a chain (chains.folded)
        if isinstance(raw, dict) and isinstance(rebuilt.body, Signature):
            onward: dict[str, Any] = rebuilt.body.options  # type: ignore[assignment]  # raw
            onward.update({key: raw[key] for key in ONWARD_KEYS
                           if key != "chain" and raw.get(key) is not None})
        return rebuilt


def _inner(inner: chord[Any], marks: dict[str, Any]) -> tuple[list[Signature[Any]], BodyResult]:
    """A chord that is a header member of another (chords of chords): its messages, for
    the outer header's call, and its body's result. Its body is the member, so its last
    task carries the outer chord's marks (raw, in its options: the body's own, or, for a
    chain body, those of the last step it carries) and joins the outer chord when it ends
    (:func:`celeriac.middleware.chords.send_body`)."""
    body_sig, result, group_id = inner._prepared()
    if isinstance(body_sig, _GroupBody) or (
            isinstance(body_sig, _ChainBody) and body_sig.rest[0].get("subtask_type") is not None):
        raise ConfigurationError(f"{inner!r} in a chord's header: an inner chord's body "
                                 "must end with a task in celeriac (its last task joins the "
                                 "outer chord); see docs/canvas.md")
    body_sig.options.update(marks)  # type: ignore[typeddict-item]  # a chain body's go to its last task
    calls, header = inner._header_calls(inner, body_sig, group_id, None, None)
    top_of(result).parent = header
    return calls, result


def send_group_body(app: Celeriac, body: Mapping[str, Any], values: list[Any],
                    claim: list[str] | None) -> None:
    """Send a chord's group body, each member with the header's values first in its
    arguments, in one broker call (all or none), under the group's id and every member's
    frozen id. Every message carries the same claim: the chord's claim admits one token,
    so members of one send all run and those of a second send of the body none
    (``docs/canvas-chords.md``)."""
    rebuilt = from_dict(body, app)
    if not isinstance(rebuilt, group):
        raise TypeError(f"not a group body: {body!r:.200}")
    heads, _ = _chain_heads([member.merged((values,)) for member in rebuilt.tasks])
    if not heads:  # an empty group body (Celery's client allows one): nothing to run
        return
    marks = {"chord_claim": claim} if claim else {}
    app.send_many([_Marked(head, marks) for head in heads], group_id=rebuilt.group_id,
                  chunk_size=None)


def body_parts(app: Celeriac, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A chord's body as the messages it is sent as, each a task's dict whose raw options
    may carry what follows it (``chain``): the body itself; a chain's first task (a chain
    body Celery's client wrote); or each member of a group body (a chain member as its
    first task)."""
    kind = body.get("subtask_type")
    if kind not in ("chain", "group"):
        return [dict(body)]
    rebuilt = from_dict(body, app)
    members = rebuilt.tasks if kind == "group" else [rebuilt]
    return [_travelling(member)[0].to_dict() if member.subtask_type == "chain"
            else member.to_dict() for member in members]


__all__ = ["body_parts", "chord", "send_group_body", "top_of"]
