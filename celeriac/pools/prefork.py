"""The prefork pool: ``-c N`` processes, each running one task at a time.

Every process is a fresh interpreter started by the supervisor (never a fork of
a process that imported the app), with its own consumer. Inside a process this
pool behaves exactly like :class:`SoloPool`; what makes it prefork is its
layout. The hard time limit is the supervisor's: it kills and replaces the
process, which a CPU loop or a stuck C call cannot prevent.
"""

from __future__ import annotations

from celeriac.pools.solo import SoloPool


class PreforkPool(SoloPool):
    """One task at a time per process; ``-c`` is the number of processes."""

    name = "prefork"

    @classmethod
    def layout(cls, concurrency: int, processes: int | None) -> tuple[int, int]:
        return (concurrency, 1)
