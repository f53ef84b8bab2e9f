"""Revoking tasks: ``AsyncResult.revoke()``, ``app.control.revoke()``, ``GroupResult.revoke()``.

A revocation is stored in the broker (:meth:`Broker.revoke`) with an expiry
(``worker_revoke_expires``, three hours by default, as in Celery), not sent to
the workers that happen to be up: every worker process polls the broker's
revocations twice a second and keeps the unexpired ids, so a revocation reaches
every worker within a second, and one started later (or restarted) still
refuses the task. A revoked message is not run: its result is REVOKED and
``task_revoked`` fires (:mod:`celeriac.middleware.revoke`).

With ``terminate=True`` a task that is already running is stopped too: thread
and green pools raise :class:`~celeriac.exceptions.Terminated` in the task's thread
or greenlet; prefork and solo, whose task runs on the process's main thread,
ask the supervisor to replace the process (its other messages go back at once,
uncharged). Revoking an unknown or finished id is accepted and does nothing,
as in Celery.
"""

from __future__ import annotations

import signal as signals_module
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celeriac.brokers.base import Revocation
from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def signal_name(value: str | int | None) -> str:
    """``"SIGTERM"``, ``"TERM"``, ``15`` or None (SIGTERM) as a signal name; a clear error else."""
    if value is None:
        return "SIGTERM"
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return signals_module.Signals(value).name
        if isinstance(value, str):
            name = value.strip().upper()
            name = name if name.startswith("SIG") else f"SIG{name}"
            return signals_module.Signals[name].name
    except (KeyError, ValueError):
        pass
    raise ConfigurationError(f"revoke: unknown signal {value!r} (e.g. 'SIGTERM', 'SIGKILL', 9)")


def task_ids(value: str | Iterable[str]) -> list[str]:
    """One id or many, each checked: a non-string id is a clear error, not a silent no-op."""
    ids: list[Any]
    if isinstance(value, str):
        ids = [value]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | dict):
        ids = list(value)
    else:
        ids = [value]
    for task_id in ids:
        if not isinstance(task_id, str) or not task_id:
            raise TypeError(f"revoke: task ids are non-empty strings, got {task_id!r} "
                            f"({type(task_id).__name__}); pass AsyncResult.id")
    return ids


def revoke(app: Celeriac, task_id: str | Iterable[str], *, terminate: bool = False,
           signal: str | int | None = None) -> None:
    """Revoke ``task_id`` (one id or many) in the app's broker, for every worker."""
    ids = task_ids(task_id)
    name = signal_name(signal)
    expires = time.time() + float(app.conf.worker_revoke_expires)
    app.broker.revoke([Revocation(i, expires, terminate=terminate, signal=name) for i in ids])
