"""celeriac: a distributed task queue for Python built around green threads.

>>> from celeriac import Celeriac  # or Celery: the same class, Celery's name
>>> app = Celeriac("tasks")
>>> @app.task
... def add(x, y):
...     return x + y

``@shared_task`` declares a task for every app (a reusable module's tasks), and
``current_app`` is the app such code uses: see :mod:`celeriac._state`.

The names below are imported on first use (PEP 562), not when ``celeriac`` is
imported: a green worker process must monkey-patch before ``threading``,
``socket`` and friends are imported, and it starts from inside this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from celeriac._state import current_app, current_task
    from celeriac.app import Celeriac, Celery
    from celeriac.canvas import (
        Signature,
        chain,
        chord,
        chunks,
        group,
        maybe_signature,
        signature,
        subtask,
        xmap,
        xstarmap,
    )
    from celeriac.exceptions import (
        CeleriacError,
        ConfigurationError,
        NotRegistered,
        Retry,
        SoftTimeLimitExceeded,
        TaskError,
        TimeLimitExceeded,
    )
    from celeriac.result import AsyncResult, EagerResult, GroupResult
    from celeriac.shared import shared_task
    from celeriac.task import Task
    from celeriac.utils import uuid

#: Public name -> module that defines it.
_EXPORTS = {
    "Celeriac": "celeriac.app",
    "Celery": "celeriac.app",
    "current_app": "celeriac._state",
    "current_task": "celeriac._state",
    "uuid": "celeriac.utils",
    "shared_task": "celeriac.shared",
    "AsyncResult": "celeriac.result",
    "EagerResult": "celeriac.result",
    "GroupResult": "celeriac.result",
    "Signature": "celeriac.canvas",
    "group": "celeriac.canvas",
    "chain": "celeriac.canvas",
    "chord": "celeriac.canvas",
    "chunks": "celeriac.canvas",
    "signature": "celeriac.canvas",
    "subtask": "celeriac.canvas",
    "maybe_signature": "celeriac.canvas",
    "xmap": "celeriac.canvas",
    "xstarmap": "celeriac.canvas",
    "Task": "celeriac.task",
    "CeleriacError": "celeriac.exceptions",
    "ConfigurationError": "celeriac.exceptions",
    "NotRegistered": "celeriac.exceptions",
    "Retry": "celeriac.exceptions",
    "SoftTimeLimitExceeded": "celeriac.exceptions",
    "TaskError": "celeriac.exceptions",
    "TimeLimitExceeded": "celeriac.exceptions",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'celeriac' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "AsyncResult",
    "Celeriac",
    "CeleriacError",
    "Celery",
    "ConfigurationError",
    "EagerResult",
    "GroupResult",
    "NotRegistered",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskError",
    "TimeLimitExceeded",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "subtask",
    "uuid",
    "xmap",
    "xstarmap",
]
