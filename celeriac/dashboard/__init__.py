"""The web dashboard: ``celeriac -A proj dashboard`` or ``celeriac worker --dashboard``
(docs/dashboard.md).

A Flask app (:func:`create_app`) served by gevent's WSGI server
(:mod:`celeriac.dashboard.server`), reading everything from the broker and the result
backend (:mod:`celeriac.dashboard.data`), secure by default (:mod:`celeriac.dashboard.auth`).
Needs the ``dashboard`` extra: ``pip install 'celeriac[dashboard]'``.
"""

from __future__ import annotations

from celeriac.dashboard.app import create_app

__all__ = ["create_app"]
