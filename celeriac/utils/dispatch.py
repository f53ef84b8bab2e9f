"""Celery's ``celery.utils.dispatch``: :class:`~celeriac.signals.Signal`, for an app's own
signals (``my_signal = Signal(name="my_signal")``; ``connect``, ``send``, ``disconnect``)."""

from __future__ import annotations

from celeriac.signals import Signal

__all__ = ["Signal"]
