"""Periodic tasks: entries (:mod:`celeriac.beat.entries`) and the highly available beat
that sends them (:mod:`celeriac.beat.service`); docs/periodic-tasks.md."""

from celeriac.beat.entries import Entry
from celeriac.beat.service import Beat

__all__ = ["Beat", "Entry"]
