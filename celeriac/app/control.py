"""Celery's ``celery.app.control``: remote control (``app.control``) and inspection
(``app.control.inspect()``), defined in :mod:`celeriac.control`."""

from __future__ import annotations

from celeriac.control import Control, Inspect

__all__ = ["Control", "Inspect"]
