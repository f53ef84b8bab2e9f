"""Periodic tasks: entries (:mod:`celeriac.beat.entries`) and the highly available beat
that sends them (:mod:`celeriac.beat.service`); docs/periodic-tasks.md.

``Beat`` and ``Entry`` are imported on first use: the worker's supervisor reads
:mod:`celeriac.beat.presence` (is a heartbeat record a beat's?) and needs neither, nor
the schedules they bring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.beat.entries import Entry
    from celeriac.beat.service import Beat

__all__ = ["Beat", "Entry"]


def __getattr__(name: str) -> Any:
    if name == "Beat":
        from celeriac.beat.service import Beat

        return Beat
    if name == "Entry":
        from celeriac.beat.entries import Entry

        return Entry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
