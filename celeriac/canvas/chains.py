"""``chain``: tasks run one after the other, each called with the previous one's result.

``chain(add.s(2, 2), add.s(4), mul.s(8))`` or ``add.s(2, 2) | add.s(4) | mul.s(8)``.
Sending a chain sends its first task only; the rest travel in that message's
``chain`` field, in Celery's order (the next step *last*), and each worker that
finishes a step sends the next (:mod:`celeriac.middleware.followups`). Every step's
task id is fixed when the chain is sent, so the result of the last step, returned
at once, leads back to the first through ``.parent``, and a step sent twice (a
worker died between sending it and acking its own message) is sent under the same
id. A group may be the last step (its members each get the value); a group followed
by a task (or a chain, or a group) becomes a chord (:mod:`celeriac.canvas.chords`); the
steps after a chord travel in its body's options (:func:`folded`).
A chain may be a member of a group (:meth:`chain.as_head`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from celeriac.canvas.chords import chord, top_of
from celeriac.canvas.groups import group
from celeriac.canvas.signatures import Signature, from_dict, links
from celeriac.exceptions import ConfigurationError
from celeriac.result import AsyncResult, GroupResult
from celeriac.states import SUCCESS
from celeriac.task import check_send_options

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.app import Celeriac
    from celeriac.result import EagerResult
    from celeriac.task import SendOptions

R = TypeVar("R")


#: A step of a chain: a task, or a group as its last step.
Step = Signature[Any] | group[Any]


def _spliced(items: Iterable[Any]) -> Iterable[Any]:
    """The items with nested chains spliced in, so a group followed by a chain meets the
    chain's first step."""
    for item in items:
        if isinstance(item, chain):
            yield from item.unchain_tasks()
        else:
            yield item


def _steps(items: Iterable[Any]) -> list[Step]:
    """The steps of a chain, nested chains spliced in. A group followed by a task or a
    group becomes a chord (Celery's rule)."""
    steps: list[Step] = []
    for item in _spliced(items):
        if steps and isinstance(steps[-1], group):
            if not (isinstance(item, group) or (isinstance(item, Signature)
                                                and item.subtask_type is None)):
                raise ConfigurationError(f"{steps[-1]!r} followed by {item!r} in a chain: a group "
                                         "followed by a task or a group is a chord; celeriac's "
                                         "chord body is not a chord (see docs/canvas.md)")
            steps[-1] = chord(steps[-1], item)
        elif isinstance(item, group):
            if not item.tasks:
                raise ConfigurationError("an empty group in a chain has nothing to run")
            steps.append(item)
        elif isinstance(item, Signature):
            steps.append(item)
        else:
            raise TypeError(f"a chain holds signatures (task.s(...)), not {type(item).__name__}")
    return steps


class _ChainHead(Signature[Any]):
    """A chain's first task as a member of a group: its message carries the chain's
    other steps (what :meth:`Signature.send` does with ``chain=``, for ``send_many``)."""

    def __init__(self, first: Signature[Any], rest: list[dict[str, Any]],
                 marks: dict[str, Any] | None = None) -> None:
        super().__init__(first.task if first.task is not None else first.name, first.args,
                         first.kwargs, app=first.app, immutable=first.immutable)
        self.options = {**first.options}
        self.rest = rest
        #: A chord's marks when this one task is a whole header member (``chord``, ``group_index``).
        self.marks = {k: v for k, v in (marks or {}).items() if k != "group_id"}

    def resolved_options(self) -> SendOptions:
        options: dict[str, Any] = {**super().resolved_options(), **self.marks}
        if self.rest:
            options["chain"] = self.rest  # a message option: send_many passes it on
        return options  # type: ignore[return-value]


def folded(steps: list[Step], after: Sequence[dict[str, Any]] = ()
            ) -> tuple[list[Step], list[dict[str, Any]]]:
    """The frozen steps as they travel, and the first one's message ``chain`` (the steps
    after it, raw, next step last). A chord followed by more steps carries them in its
    body's options (``chain``) and the chain stops there, since the chord's body, sent by
    the member that completes the header, is what comes next
    (:func:`celeriac.middleware.chords.send_body` sends them on). ``after``: raw steps to
    run after the chain's last step (the rest of a replaced task's chain,
    :mod:`celeriac.canvas.replace`), carried by the part of the chain that holds that step."""
    steps = list(steps)
    pending = list(after)
    for index in range(len(steps) - 1, -1, -1):
        step = steps[index]
        if isinstance(step, chord) and step.body is not None:
            rest = [*pending, *(later.to_dict() for later in reversed(steps[index + 1:]))]
            if rest:
                step.carry(rest)
            pending = []
            del steps[index + 1:]
    return steps, [*pending, *(step.to_dict() for step in reversed(steps[1:]))]


def _first_options(options: SendOptions) -> SendOptions:
    """A chain's options as its first task takes them: the links went to the steps
    (:meth:`chain.unchain_tasks`), the task id is the last step's."""
    return {k: v for k, v in options.items()  # type: ignore[return-value]
            if k not in ("link", "link_error", "task_id")}


class chain(Signature[R]):  # lower case: Celery's name, and it is used like a function
    """Tasks run in order, each called with the previous result (unless immutable, ``si()``).

    Options set on the chain (``chain(...).set(queue="io")``, or given to
    ``apply_async``) apply to its first task, as in Celery; ``task_id=`` is the last
    task's id. ``link`` goes to the last task, ``link_error`` to every task, so an error
    anywhere stops the chain and reaches the errback once.
    """

    subtask_type = "chain"

    def __init__(self, *tasks: Signature[Any] | chain[Any] | Iterable[Signature[Any]],
                 app: Celeriac | None = None) -> None:
        items: Iterable[Any] = tasks
        if len(tasks) == 1 and not isinstance(tasks[0], Signature | group):
            items = tasks[0]
        self.tasks = _steps(items)
        if app is None and not self.tasks:
            raise ConfigurationError("an empty chain needs app=...")
        super().__init__("celery.chain", app=app or self.tasks[0].app)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) or "chain()"

    def unchain_tasks(self) -> list[Step]:
        """Copies of the steps with the chain's links on them: ``link`` on the last,
        ``link_error`` on each (Celery's ``unchain_tasks``)."""
        steps = [step.clone() for step in self.tasks]
        if steps:
            for callback in links(self.options.get("link"), self.app):
                steps[-1].link(callback)
            for errback in links(self.options.get("link_error"), self.app):
                for step in steps:
                    step.link_error(errback)
        return steps

    def __or__(self, other: Signature[Any] | chain[Any] | group[Any]) -> chain[Any]:
        if isinstance(other, Signature | group):
            return chain(self, other)
        return NotImplemented

    def merged(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
               options: SendOptions | None = None) -> chain[R]:
        """A copy with arguments for its first task and options for the chain."""
        check_send_options(options or {})
        steps: list[Step] = [step.clone() for step in self.tasks]
        if steps and (args or kwargs):
            steps[0] = steps[0].merged(args, kwargs)
        copy: chain[R] = chain(*steps, app=self.app)
        copy.options = {**self.options}
        if options:
            copy.set(**options)
        return copy

    # -- the wire form --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"task": "celery.chain", "args": [],
                "kwargs": {"tasks": [step.to_dict() for step in self.tasks]},
                "options": Signature.to_dict(self)["options"], "subtask_type": "chain",
                "immutable": False}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celeriac | None = None) -> chain[Any]:
        """A chain rebuilt from its dict form (a callback Celery wrote may be one)."""
        from celeriac.canvas.signatures import wire_options

        tasks = (d.get("kwargs") or {}).get("tasks") or []
        rebuilt: chain[Any] = chain(*[from_dict(t, app) for t in tasks], app=app)
        rebuilt.set(**wire_options(d.get("options") or {}, "celery.chain"))
        return rebuilt

    # -- sending and running ---------------------------------------------------------------
    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Unpack[SendOptions]) -> AsyncResult[R]:
        """Send the first task with the others in its message; return the last task's
        result, whose ``parent`` is the one before (up to the first). Under
        ``task_always_eager`` the whole chain runs here (:meth:`apply`)."""
        check_send_options(options, "chain.apply_async")
        if self.app.conf["task_always_eager"]:
            return self.apply(args, kwargs, **options)
        whole = self.merged(None, None, options) if options else self
        frozen, results = whole.frozen_steps()
        steps, rest = folded(frozen)
        first_options = _first_options(whole.options)
        first = steps[0]
        if isinstance(first, group | chord):  # a group or chord first: itself, with the rest
            sent = first.apply_async(args, kwargs, **first_options)
            if isinstance(first, chord):
                top_of(sent).parent = None
            if len(frozen) > 1:
                return cast("AsyncResult[R]", results[-1])
            return cast("AsyncResult[R]", sent)
        first.merged(args, kwargs, first_options).send(chain=rest or None)
        # A chain ending in a group returns its GroupResult (get(), parent, id), as Celery.
        return cast("AsyncResult[R]", results[-1])

    def frozen_steps(self) -> tuple[list[Step], list[AsyncResult[Any] | GroupResult[Any]]]:
        """The steps to send, every task id fixed, and their results, each one's ``parent``
        the one before; ``task_id`` of the chain is the last step's."""
        steps = self.unchain_tasks()
        if not steps:
            raise ConfigurationError("an empty chain has nothing to send")
        last_id = self.options.get("task_id")
        results: list[AsyncResult[Any] | GroupResult[Any]] = []
        for index, step in enumerate(steps):
            if isinstance(step, group):
                step.group_id = step.group_id or (last_id if index == len(steps) - 1 else None)
                result: AsyncResult[Any] | GroupResult[Any] = step.freeze()
            else:
                result = step.freeze(last_id if index == len(steps) - 1 else None)
            # A chord's result is its body's, leading back to the header: the header's
            # parent is the step before.
            before = results[-1] if results else None
            if isinstance(step, chord):
                top_of(result).parent = before
            else:
                result.parent = before
            results.append(result)
        return steps, results

    def as_head(self, last_marks: dict[str, Any] | None = None
                ) -> tuple[Signature[Any], AsyncResult[Any]]:
        """Its first task, carrying the rest in its message, and the last step's result:
        how a group sends a chain among its members (in the group's one broker call).
        ``last_marks``: options for the last task's message (a chord header member's:
        ``chord``, ``group_id``, ``group_index``, Celery's marks on a chain's last task)."""
        steps, results = self.frozen_steps()
        first = steps[0]
        if not (isinstance(first, Signature) and first.subtask_type is None) or isinstance(
                results[-1], GroupResult) or any(isinstance(step, chord) for step in steps):
            raise ConfigurationError(f"{self!r} in a group: a chain inside a group or a chord's "
                                     "header must start and end with a task and hold no chord "
                                     "in celeriac; see docs/canvas.md")
        rest = [step.to_dict() for step in reversed(steps[1:])]
        if last_marks and not rest:  # a chain of one task: its own message is marked
            return _ChainHead(first, [], {**last_marks, "group_id": None}), results[-1]
        if last_marks:
            rest[0]["options"].update(last_marks)
        return _ChainHead(first, rest), results[-1]

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Unpack[SendOptions]) -> EagerResult[R]:
        """Run every step here, in order (Celery's eager chain): each with the previous
        value, options for the first. A step that does not succeed ends the chain: its
        errbacks ran, its result (whose ``get()`` raises) is returned."""
        whole = self.merged(None, None, options) if options else self
        steps = whole.unchain_tasks()
        if not steps:
            raise ConfigurationError("an empty chain has nothing to run")
        last: Any = None
        for index, step in enumerate(steps):
            if last is None:
                result: Any = step.apply(args, kwargs, **_first_options(whole.options))
            else:
                result = step.apply((last.get(),))
            result.parent = last
            last = result
            if index < len(steps) - 1 and result.status != SUCCESS:
                break  # a group is only ever the last step
        return cast("EagerResult[R]", last)

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult[R]:  # type: ignore[override]
        """``chain(...)(args)`` sends it, as in Celery (a signature's call runs it here)."""
        return self.apply_async(args, kwargs)
