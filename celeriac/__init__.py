"""celeriac: a distributed task queue for Python built around green threads.

>>> from celeriac import Celeriac
>>> app = Celeriac("tasks")
>>> @app.task
... def add(x, y):
...     return x + y
"""

from __future__ import annotations

__version__ = "0.1.0"

from celeriac.app import Celeriac
from celeriac.errors import (
    CeleriacError,
    ConfigurationError,
    NotRegistered,
    Retry,
    SoftTimeLimitExceeded,
    TaskError,
    TimeLimitExceeded,
)
from celeriac.result import AsyncResult, EagerResult
from celeriac.task import Task

__all__ = [
    "AsyncResult",
    "Celeriac",
    "CeleriacError",
    "ConfigurationError",
    "EagerResult",
    "NotRegistered",
    "Retry",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskError",
    "TimeLimitExceeded",
    "__version__",
]
