"""Execution pools, chosen by name with ``-P``: one small class per file."""

from __future__ import annotations

from celeriac.errors import ConfigurationError
from celeriac.pools.base import EventLike, Job, Pool
from celeriac.pools.prefork import PreforkPool
from celeriac.pools.solo import SoloPool
from celeriac.pools.threads import ThreadPool
from celeriac.settings import suggest

#: ``-P`` name -> pool class.
POOLS: dict[str, type[Pool]] = {cls.name: cls for cls in (SoloPool, ThreadPool, PreforkPool)}


def get_pool(name: str) -> type[Pool]:
    """The pool class called ``name``; a clear error for an unknown one."""
    try:
        return POOLS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown pool {name!r}{suggest(name, POOLS)}; choose from {', '.join(POOLS)}") from None


__all__ = ["POOLS", "EventLike", "Job", "Pool", "get_pool"]
