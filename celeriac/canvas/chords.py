"""``chord``: a group (the header) whose results, in order, are sent to one task (the body).

``chord(header, body)``, ``chord(header)(body)``, or a group followed by a task in a
chain (``group(...) | tsum.s()``). Sending a chord sends its header as one group whose
messages each carry the body in their ``chord`` embed, the chord's id in ``group`` and
their position in ``group_index`` (Celery's protocol v2 form). There is no
``chord_unlock`` task: the worker that finishes the last header member sends the body,
exactly once, through the result backend's atomic join (:mod:`celeriac.middleware.chords`,
``docs/canvas-chords.md``).

A header member may be a chain: it is sent as its first task, and its last task carries
the chord (:meth:`chain.as_head`); or a chord, whose body is then the member
(:func:`_send_inner`). What is not supported yet, refused when the chord is built: a
group in the header and a body that is not one task.
A chord followed by more steps in a chain carries them in its body's options
(:func:`celeriac.canvas.chains.folded`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from celeriac.canvas.groups import group
from celeriac.canvas.signatures import Signature, from_dict, links, wire_options
from celeriac.exceptions import ConfigurationError
from celeriac.result import AsyncResult, EagerResult, GroupResult
from celeriac.states import SUCCESS
from celeriac.task import check_send_options

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.app import Celeriac
    from celeriac.task import SendOptions

R = TypeVar("R")

#: What follows a chord, raw in its body's options, kept when the chord travels as a dict
#: (a chain step): the steps after it in a chain (``chain``, :func:`chains.folded`) and,
#: when it replaced a chord header member (``Task.replace``), that member's chord marks.
ONWARD_KEYS = ("chain", "chord", "group_id", "group_index")


def _one_task(sig: Any, what: str) -> Signature[Any]:
    """``sig`` if it is one task (or, as a header member, a chain of tasks); a clear error
    for what celeriac's chords cannot hold yet."""
    if not isinstance(sig, Signature):
        raise TypeError(f"a chord's {what} is a signature (task.s(...)), not {type(sig).__name__}")
    if sig.subtask_type in ("chain", "chord") and what == "header member":
        return sig
    if sig.subtask_type is not None:
        raise ConfigurationError(
            f"chord {what} {sig!r} is a {sig.subtask_type}: celeriac's chords take a task, "
            f"a chain or a chord per header member and one task as body (no groups inside "
            f"a chord, no chord as a body yet); see docs/canvas.md")
    return sig


class _Marked(Signature[Any]):
    """A header member as it is sent: its message carries the chord (body, position)."""

    def __init__(self, member: Signature[Any], marks: dict[str, Any]) -> None:
        super().__init__(member.task if member.task is not None else member.name, member.args,
                         member.kwargs, app=member.app, immutable=member.immutable)
        self.options = {**member.options}
        self.marks = marks

    def resolved_options(self) -> SendOptions:
        return {**super().resolved_options(), **self.marks}  # type: ignore[typeddict-item]


class chord(Signature[R]):  # lower case: Celery's name, and it is used like a function
    """A header group whose results, in header order, are the first argument of the body.

    ``apply_async()`` returns the body's result; its ``parent`` is the header's
    :class:`GroupResult`. ``task_id=`` is the body's id. Arguments given when sent go to
    every header member; other options too, except ``link``/``link_error``, which go to
    the body (Celery's ``chord.link``). A failing header member fails the chord with
    :class:`ChordError` naming it, stored as the body's result; the body's errbacks run.
    """

    subtask_type = "chord"

    def __init__(self, header: group[Any] | Iterable[Signature[Any]],
                 body: Signature[R] | None = None, *, app: Celeriac | None = None,
                 **options: Unpack[SendOptions]) -> None:
        self.header: group[Any] = header.clone() if isinstance(header, group) else group(list(header))
        for member in self.header.tasks:
            _one_task(member, "header member")
        self.body: Signature[R] | None = _one_task(body, "body") if body is not None else None
        if app is None:
            if not self.header.tasks and body is None:
                raise ConfigurationError("an empty chord without a body needs app=...")
            app = self.header.tasks[0].app if self.header.tasks else cast("Signature[R]", body).app
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

    # -- freezing ----------------------------------------------------------------------------
    def _body_for(self, body: Signature[Any] | None) -> Signature[Any]:
        """The body, copied, with the chord's links and its frozen task id."""
        body = body if body is not None else self.body
        if body is None:
            raise ConfigurationError(f"{self!r} has no body: chord(header, body) or chord(header)(body)")
        body = _one_task(body, "body").clone()
        for callback in links(self.options.get("link"), self.app):
            body.link(callback)
        for errback in links(self.options.get("link_error"), self.app):
            body.link_error(errback)
        body.freeze(self.options.get("task_id"))
        return body

    def freeze(self, _id: str | None = None) -> AsyncResult[R]:
        """Fix the chord's id (its header's group id) and the body's task id now; the
        body's result, its ``parent`` the header's :class:`GroupResult`."""
        if _id and not self.options.get("task_id"):
            self.options["task_id"] = _id
        body = self._body_for(None)
        self.options["task_id"] = body.options["task_id"]
        header = self.header.freeze()
        result: AsyncResult[R] = AsyncResult(str(body.options["task_id"]), self.app, body.name)
        result.parent = header
        return result

    # -- sending and running ---------------------------------------------------------------
    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    body: Signature[Any] | None = None,
                    **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """Send the header, each member carrying the body; return the body's result.
        Under ``task_always_eager`` the chord runs here (:meth:`apply`)."""
        check_send_options(options, "chord.apply_async")
        whole = self.merged(None, None, options) if options else self
        if body is not None:
            whole.body = _one_task(body, "body")
        if self.app.conf["task_always_eager"]:
            return whole.apply(args, kwargs)
        body_sig, group_id = whole.body_and_header()
        if whole.header.group_id is not None and getattr(self, "_sent", False):
            # Applied again under the same (frozen) group id: a new run of the chord.
            self.app.backend.chord_forget(group_id)
        self._sent = True
        header_result = self._send_header(whole, body_sig, group_id, args, kwargs)
        result: AsyncResult[R] = AsyncResult(str(body_sig.options["task_id"]), self.app,
                                             body_sig.name)
        result.parent = header_result
        return result

    def body_and_header(self) -> tuple[Signature[Any], str]:
        """The body ready to travel (links, frozen id) and the chord's group id."""
        body_sig = self._body_for(None)
        self.header.group_id = self.header.group_id or str(uuid.uuid4())
        return body_sig, self.header.group_id

    def _send_header(self, whole: chord[R], body_sig: Signature[Any], group_id: str,
                     args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
                     ) -> GroupResult[Any]:
        header_options = {k: v for k, v in whole.options.items()
                          if k not in ("link", "link_error", "task_id")}
        members = [task.merged(args, kwargs, header_options)  # type: ignore[arg-type]
                   for task in whole.header.tasks]
        if not members:  # Celery's: an empty header calls the body at once, with []
            from celeriac.middleware.chords import send_body

            send_body(self.app, body_sig.to_dict(), [], None)
            return GroupResult(group_id, [], app=self.app)
        from celeriac.canvas.chains import chain

        body_dict = body_sig.to_dict()
        body_dict["chord_size"] = len(members)  # Celery's key; its workers read it too
        marked: list[Signature[Any]] = []
        results: list[AsyncResult[Any]] = []
        nested: dict[int, AsyncResult[Any]] = {}
        for index, member in enumerate(members):
            marks = {"chord": body_dict, "group_index": index}
            if isinstance(member, chord):
                nested[index] = _send_inner(member, {**marks, "group_id": group_id})
            elif isinstance(member, chain):
                head, last = member.as_head(last_marks={**marks, "group_id": group_id})
                marked.append(head)
                results.append(last)
            else:
                marked.append(_Marked(member, marks))
        sent = iter(self.app.send_many(marked, group_id=group_id, chunk_size=None)
                    if marked else [])
        by_index = iter(results)
        found: list[AsyncResult[Any]] = []
        for index, member in enumerate(members):
            if index in nested:
                found.append(nested[index])
                continue
            first = next(sent)
            found.append(next(by_index) if isinstance(member, chain) else first)
        return GroupResult(group_id, found, app=self.app)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Unpack[SendOptions]) -> EagerResult[R]:
        """Run the header here, then the body with its values; a failed member makes the
        body's result a :class:`ChordError` (stored nowhere) and runs its errbacks."""
        whole = self.merged(None, None, options) if options else self
        body_sig, group_id = whole.body_and_header()
        header = GroupResult(group_id, [task.apply(args, kwargs) for task in whole.header.tasks],
                             app=self.app)
        failed = next((r for r in header.results if r.status != SUCCESS), None)
        if failed is None:
            result: EagerResult[R] = body_sig.apply(([r.result for r in header.results],))
        else:
            from celeriac.middleware.chords import chord_failed

            result = cast("EagerResult[R]", chord_failed(
                self.app, body_sig, failed.id, failed.status, failed.result, eager=True))
        result.parent = header
        return result

    def __call__(self, body: Signature[Any] | None = None,  # type: ignore[override]
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
        if isinstance(raw, dict) and rebuilt.body is not None:
            onward: dict[str, Any] = rebuilt.body.options  # type: ignore[assignment]  # raw
            onward.update({key: raw[key] for key in ONWARD_KEYS if raw.get(key) is not None})
        return rebuilt


def _send_inner(inner: chord[Any], marks: dict[str, Any]) -> AsyncResult[Any]:
    """Send a chord that is a header member of another (chords of chords): its body is the
    member, so it carries the outer chord's marks (raw, in its options) and the member
    that completes the inner header sends it as a member of the outer chord
    (:func:`celeriac.middleware.chords.send_body`). Returns the inner body's result."""
    body_sig, group_id = inner.body_and_header()
    body_sig.options.update(marks)  # type: ignore[typeddict-item]
    header = inner._send_header(inner, body_sig, group_id, None, None)
    result: AsyncResult[Any] = AsyncResult(str(body_sig.options["task_id"]), inner.app,
                                           body_sig.name)
    result.parent = header
    return result


__all__ = ["chord"]
