"""``group``: signatures sent together, many per broker call, one :class:`GroupResult`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from celeriac.canvas.signatures import Signature, from_dict
from celeriac.exceptions import ConfigurationError
from celeriac.result import GroupResult, add_to_parent
from celeriac.task import check_send_options

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.app import Celeriac
    from celeriac.task import SendOptions

R = TypeVar("R")


def _chain_heads(calls: list[Signature[Any]]) -> tuple[list[Signature[Any]], dict[int, Any]]:
    """The messages of a group's members: a chain is sent as its first task carrying the
    rest (every id fixed), and its member result is its last step's."""
    if not any(call.subtask_type == "chain" for call in calls):
        return calls, {}
    heads: list[Signature[Any]] = []
    lasts: dict[int, Any] = {}
    for index, call in enumerate(calls):
        if call.subtask_type == "chain":
            head, lasts[index] = call.as_head()  # type: ignore[attr-defined]
            heads.append(head)
        else:
            heads.append(call)
    return heads, lasts


def _with_chords(app: Celeriac, calls: list[Signature[Any]], group_id: str) -> list[Any]:
    """Send a group holding chords in its one broker call: each chord's header messages
    (naming their own group, Celery's meaning: a chord in a group runs as a chord) with
    the group's other members, every id fixed first; a chord's place in the group's
    result is its body's."""
    messages: list[Signature[Any]] = []
    members: list[Any] = []
    for call in calls:
        if call.subtask_type == "chord":
            chord_calls, result = call.messages()  # type: ignore[attr-defined]
            messages.extend(chord_calls)
        else:
            [head], lasts = _chain_heads([call])
            result = lasts[0] if 0 in lasts else head.freeze()
            messages.append(head)
        members.append(result)
    if messages:
        app.send_many(messages, group_id=group_id, chunk_size=None)
    return members


class group(Generic[R]):  # lower case: Celery's name, and it is used like a function
    """Signatures sent together: one broker call, one group id, one :class:`GroupResult`.

    A member that is a chord runs as a chord (its header members' messages name its own
    group, in the group's one call), its body's result in its place in the group's.

    ``group(add.s(1, 1), add.s(2, 2))`` or ``group(add.s(i, i) for i in range(100))``.
    Every message is encoded before any is sent and the broker stores all of them or
    none, so a group never runs in part because one argument could not be encoded
    or the broker failed half-way. Tasks see the group id as ``self.request.group``.
    """

    @overload
    def __init__(self, tasks: Iterable[Signature[R]], /) -> None: ...

    @overload
    def __init__(self, *tasks: Signature[R]) -> None: ...

    def __init__(self, *tasks: Signature[R] | Iterable[Signature[R]]) -> None:
        items: Iterable[Any] = tasks
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            items = tasks[0]
        self.tasks: list[Signature[R]] = []
        #: The group id it is sent with; None: a new one per send. Set when it travelled
        #: with its id fixed (a chain step Celery's client wrote, ``options.task_id``).
        self.group_id: str | None = None
        for item in items:
            if not isinstance(item, Signature):
                raise TypeError(f"a group holds signatures (task.s(...)), not {type(item).__name__}")
            self.tasks.append(item)

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self.tasks[:3]))
        more = f", ... ({len(self.tasks)} tasks)" if len(self.tasks) > 3 else ""
        return f"group([{shown}{more}])"

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Signature[R]]:
        return iter(self.tasks)

    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
                    **options: Unpack[SendOptions]) -> GroupResult[R]:
        """Send every task in one broker call. ``args``, ``kwargs`` and ``options`` are added
        to each signature (see :meth:`Signature.merged`); ``task_id`` is refused, ids are
        generated per message. Under ``task_always_eager`` the tasks run here, in order."""
        check_send_options(options, "group.apply_async", shared=True)
        group_id = self.group_id or str(uuid.uuid4())
        calls = [signature.merged(args, kwargs, options) for signature in self.tasks]
        if not calls:
            return GroupResult(group_id, [])
        app = calls[0].app
        if app.conf["task_always_eager"]:
            members = [call.apply_async() for call in calls]
            result = GroupResult(group_id, members, app=app)
            add_to_parent(result, replacing=members)  # each ran as a child of its own
            return result
        if any(call.subtask_type == "chord" for call in calls):
            members = _with_chords(app, calls, group_id)
        else:
            heads, lasts = _chain_heads(calls)
            sent = app.send_many(heads, group_id=group_id, chunk_size=None)
            members = [lasts.get(i, first) for i, first in enumerate(sent)]
        result = GroupResult(group_id, members, app=app)
        add_to_parent(result)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult[R]:
        """Send every task; ``args``/``kwargs`` are added to each, as for :meth:`apply_async`."""
        return self.apply_async(args, kwargs)

    # -- as the last step of a chain ----------------------------------------------------
    @property
    def app(self) -> Celeriac:
        """The app of its first task (a group's tasks go to one broker)."""
        if not self.tasks:
            raise ConfigurationError("an empty group belongs to no app")
        return self.tasks[0].app

    def clone(self) -> group[R]:
        """A copy: its members copied, its group id kept."""
        copy: group[R] = group([task.clone() for task in self.tasks])
        copy.group_id = self.group_id
        return copy

    def merged(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
               options: SendOptions | None = None) -> group[R]:
        """A copy with ``args``/``kwargs``/``options`` added to every member."""
        copy: group[R] = group([task.merged(args, kwargs, options) for task in self.tasks])
        copy.group_id = self.group_id
        return copy

    def freeze(self) -> GroupResult[R]:
        """Fix the group id and every member's task id now; the result it will have."""
        self.group_id = self.group_id or str(uuid.uuid4())
        return GroupResult(self.group_id, [task.freeze() for task in self.tasks], app=self.app)

    def link(self, callback: Signature[Any]) -> Signature[Any]:
        """Celery's: ``callback``, made immutable, is linked to the *first* member only
        (a member cannot pass on its siblings' values)."""
        if not self.tasks:
            raise ConfigurationError("an empty group has no task to link a callback to")
        return self.tasks[0].link(callback.clone().set(immutable=True))

    def link_error(self, errback: Signature[Any]) -> Signature[Any]:
        """``errback`` on every member: any of them may fail (it may be called more than once)."""
        for task in self.tasks:
            task.link_error(errback.clone())
        return errback

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Unpack[SendOptions]) -> GroupResult[R]:
        """Run every member here, in order (``Task.apply``)."""
        check_send_options(options, "group.apply", shared=True)
        group_id = self.group_id or str(uuid.uuid4())
        members = [task.apply(args, kwargs, **options) for task in self.tasks]
        return GroupResult(group_id, list(members), app=self.app if self.tasks else None)

    def __or__(self, other: Any) -> Any:
        """``group | task`` is a chord whose body is the task (or chain, or group), as in Celery."""
        from celeriac.canvas.chords import chord

        if isinstance(other, Signature | group):
            return chord(self, other)
        return NotImplemented

    def to_dict(self) -> dict[str, Any]:
        """Celery's dict form of a group (``subtask_type: "group"``)."""
        return {"task": "celery.group", "args": [], "kwargs": {"tasks": [t.to_dict() for t in self.tasks]},
                "options": {"task_id": self.group_id} if self.group_id else {},
                "subtask_type": "group", "immutable": False}

    def __json__(self) -> dict[str, Any]:
        return self.to_dict()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celeriac) -> group[Any]:
        """A group rebuilt from its dict form (a callback or chain step Celery wrote)."""
        tasks = (d.get("kwargs") or {}).get("tasks") or []
        rebuilt: group[Any] = cls([task if isinstance(task, Signature) else from_dict(task, app)
                                   for task in tasks])
        group_id = (d.get("options") or {}).get("task_id")
        rebuilt.group_id = group_id if isinstance(group_id, str) and group_id else None
        return rebuilt
