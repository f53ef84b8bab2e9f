"""``DjangoTask``: a task sent when the database transaction commits.

``order.save(); notify.delay(order.id)`` inside ``transaction.atomic()`` can reach a worker
before the row is committed (the worker does not find it), or send a task for a row that is
then rolled back. ``notify.delay_on_commit(order.id)`` hands the send to Django's
``transaction.on_commit``: sent once if the transaction commits, never if it rolls back, at
once outside a transaction. The Django fixup (:mod:`.fixup`) makes this the default task
class of a Django project's app, as in Celery.

Unlike Celery, the arguments and send options are checked at the call, where the mistake
is, rather than when the transaction commits (where the commit has already happened and the
error surfaces from Django's commit).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from celeriac.task import Task, check_send_options

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.task import SendOptions

P = ParamSpec("P")
R = TypeVar("R")


class DjangoTask(Task[P, R]):
    """A :class:`~celeriac.task.Task` with ``delay_on_commit`` and ``apply_async_on_commit``."""

    def delay_on_commit(self, /, *args: P.args, **kwargs: P.kwargs) -> None:
        """:meth:`delay` when the current transaction commits (Django's ``on_commit``).
        Returns None, as in Celery: there is no task id until the task is sent."""
        self.check_arguments(args, kwargs)
        _on_commit(functools.partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(self, args: tuple[Any, ...] | list[Any] | None = None,
                              kwargs: dict[str, Any] | None = None,
                              **options: Unpack[SendOptions]) -> None:
        """:meth:`apply_async` when the current transaction commits; None, as in Celery."""
        check_send_options(options)
        self.check_arguments(args, kwargs)
        _on_commit(functools.partial(self.apply_async, args, kwargs, **options))


def _on_commit(send: functools.partial[Any]) -> None:
    from django.db import transaction

    transaction.on_commit(send)
