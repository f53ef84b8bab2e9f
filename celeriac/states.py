"""Task states, at Celery's import path (``from celeriac import states``).

A result record holds one of the six *result states* (``PENDING`` means nothing
recorded yet, unknown ids too). ``RECEIVED`` and ``REJECTED`` are states only
task events report (``celeriac events``, ``-E``): a worker never stores them;
nor ``IGNORED``, the state ``task_postrun`` gets for a run that raised ``Ignore``.
A task may also store a state of its own choosing (``self.update_state``); such
a state is neither ready nor an exception state.

:class:`state` orders states by how far along they are, as Celery's does, so a
monitor can keep the most advanced state it has seen of a task whose events
arrive out of order: ``state(SUCCESS) > state(STARTED)``.
"""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
#: A run that raised :class:`~celeriac.exceptions.Ignore`: ``task_postrun``'s state, never stored.
IGNORED = "IGNORED"

#: States in which the task is done: ``AsyncResult.ready()`` is True.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
#: States in which it is not done yet.
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
#: States whose stored value is an exception.
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
#: States in which ``get()`` raises the stored exception.
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED,
                        REJECTED})

#: From the most advanced state down; a state not listed ranks where ``None`` is.
PRECEDENCE = (SUCCESS, FAILURE, None, REVOKED, STARTED, RECEIVED, REJECTED, RETRY, PENDING)
_RANK = {name: rank for rank, name in enumerate(PRECEDENCE)}


def precedence(name: str | None) -> int:
    """The rank of state ``name``: lower is more advanced; a custom state ranks as ``None``."""
    return _RANK.get(name, _RANK[None])


class state(str):
    """A state name that compares by :func:`precedence`: greater is more advanced."""

    __slots__ = ()

    def __gt__(self, other: object) -> bool:
        return precedence(self) < precedence(_name(other))

    def __ge__(self, other: object) -> bool:
        return precedence(self) <= precedence(_name(other))

    def __lt__(self, other: object) -> bool:
        return precedence(self) > precedence(_name(other))

    def __le__(self, other: object) -> bool:
        return precedence(self) >= precedence(_name(other))


def _name(value: object) -> str | None:
    return value if isinstance(value, str) else None
