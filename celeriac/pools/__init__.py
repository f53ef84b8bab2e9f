"""Execution pools, chosen by name with ``-P``: one small class per file.

Pool classes are imported on first use: importing ``celeriac.pools.gevent``
must be the *first* thing a gevent worker process does, so that it can patch
before anything else (``threading``, ``socket``) is imported; and a user who
never runs gevent or eventlet need not have them installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.pools.base import Pool

#: ``-P`` name -> ``module:Class``.
POOLS: dict[str, str] = {
    "solo": "celeriac.pools.solo:SoloPool",
    "threads": "celeriac.pools.threads:ThreadPool",
    "prefork": "celeriac.pools.prefork:PreforkPool",
    "gevent": "celeriac.pools.gevent:GeventPool",
    "eventlet": "celeriac.pools.eventlet:EventletPool",
    "asyncio": "celeriac.pools.asyncio:AsyncioPool",
}

#: Pools that need an extra installed: ``pip install celeriac[NAME]``.
EXTRAS = {"gevent": "gevent", "eventlet": "eventlet", "asyncio": "asyncio"}


def get_pool(name: str) -> type[Pool]:
    """The pool class called ``name``; a clear error for an unknown or uninstalled one."""
    target = POOLS.get(name)
    if target is None:
        from celeriac.settings import suggest

        raise ConfigurationError(
            f"unknown pool {name!r}{suggest(name, POOLS)}; choose from {', '.join(POOLS)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(name, name)
        raise ConfigurationError(
            f"pool {name!r} needs {exc.name or extra!r}: pip install 'celeriac[{extra}]'") from None
    pool: type[Pool] = getattr(module, class_name)
    return pool


__all__ = ["POOLS", "get_pool"]
