"""Setting Django up for an app, as Celery's Django fixup does.

The fixup applies to an app when ``DJANGO_SETTINGS_MODULE`` is set as the app is created
(the ``proj/celery.py`` template sets it just before), Django is importable, and the app
was not created with ``fixups=[]``. It then

* makes :class:`~celeriac.contrib.django.task.DjangoTask` the app's task class unless
  ``task_cls=`` named one (Celery's rule);
* makes the app the process's default app if there is none yet;
* runs ``django.setup()`` on the app's ``import_modules`` signal, that is when the app is
  finalized and before the ``autodiscover_tasks``, ``imports`` and ``include`` modules are
  imported -- task modules may import models;
* puts :class:`~celeriac.middleware.django.DjangoConnections` in every worker process's
  pipeline (:func:`celeriac.middleware.worker_pipeline` asks :func:`applies`).

:func:`setup_before_app` is the earlier hook: a process whose environment already names
the settings (a worker process inherits its supervisor's) sets Django up before the ``-A``
app is imported, so an app module that imports models works in every process alike. In a
worker process it runs after the pool's green patching, so Django's imports are patched.

Django keeps database connections in a ``threading.local``. Under gevent with
``GEVENT_PATCHTHREAD=N`` that is a real thread-local, which every greenlet of the process
would share: a task closing "its" connection (as the middleware does) would close the one
another task is in a transaction on. :func:`setup` then gives each greenlet its own
connections (a ``gevent.local.local``), as patched threads would.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

log = logging.getLogger("celeriac.django")

#: The environment variable naming Django's settings module (Django's and Celery's).
SETTINGS_ENV = "DJANGO_SETTINGS_MODULE"

#: The names ``fixups=`` may list: Celery's Django fixup, and this module's.
FIXUP_NAMES = frozenset({"celery.fixups.django:fixup", "celeriac.contrib.django.fixup:fixup"})

#: The apps the fixup applies to (weakly: a test may create and drop many).
_APPLIED: weakref.WeakSet[Celeriac] = weakref.WeakSet()
_warned_missing = False


def wanted(fixups: Any) -> bool:
    """Whether ``Celery(fixups=...)`` asks for the Django fixup: None (Celery's built-in
    fixups) or a list naming it; an empty list turns it off. Any other fixup is refused."""
    if fixups is None:
        return True
    if isinstance(fixups, str) or not isinstance(fixups, Iterable):
        raise ConfigurationError(f"Celery(fixups={fixups!r}): give a list of fixup names")
    names = list(fixups)
    unknown = [name for name in names if name not in FIXUP_NAMES]
    if unknown:
        raise ConfigurationError(
            f"Celery(fixups={fixups!r}) is not supported: celeriac has only Django's fixup "
            f"({', '.join(sorted(FIXUP_NAMES))}); leave fixups out or give []")
    return bool(names)


def django_importable() -> bool:
    """Whether ``DJANGO_SETTINGS_MODULE`` is set and Django can be imported; set without
    Django is logged once (Celery warns the same), and the fixup stays off."""
    global _warned_missing
    if not os.environ.get(SETTINGS_ENV):
        return False
    try:
        import django  # noqa: F401
    except ImportError:
        if not _warned_missing:
            _warned_missing = True
            log.warning("%s is set but Django is not installed: the Django fix-ups "
                        "(django.setup(), DjangoTask, closing connections) are off", SETTINGS_ENV)
        return False
    return True


def install(app: Celeriac, fixups: Any, custom_task_cls: bool) -> None:
    """Apply the fixup to a new ``app`` if it applies (see the module's docstring)."""
    if not wanted(fixups) or not django_importable():
        return
    from celeriac import _state, signals

    _APPLIED.add(app)
    if not custom_task_cls:
        from celeriac.contrib.django.task import DjangoTask

        app.Task = DjangoTask
    if _state.get_default_app() is None:
        app.set_default()
    signals.import_modules.connect(_on_import_modules, weak=False,
                                   dispatch_uid="celeriac.contrib.django.fixup")


def applies(app: Celeriac) -> bool:
    """Whether the fixup was applied to ``app`` (its worker processes close connections)."""
    return app in _APPLIED


def _on_import_modules(sender: Any = None, **kwargs: Any) -> None:
    """Before an app the fixup applies to imports its task modules: Django set up."""
    if sender in _APPLIED:
        setup()


def setup_before_app() -> None:
    """``django.setup()`` now if the environment names the settings and Django is there:
    the hook ``celeriac`` commands and worker processes call before importing the app."""
    if django_importable():
        setup()


def setup() -> None:
    """``django.setup()`` once per process, with the current directory importable (the
    project's settings live next to ``manage.py``, as Celery's fixup assumes); under gevent
    without patched threads, database connections become per greenlet first."""
    import django
    from django.apps import apps

    connections_per_greenlet()
    if apps.ready:
        return
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        django.setup()
    except ModuleNotFoundError as exc:
        module = os.environ.get(SETTINGS_ENV, "")
        if exc.name and (module == exc.name or module.startswith(f"{exc.name}.")):
            raise ConfigurationError(
                f"{SETTINGS_ENV}={module!r}: no module named {exc.name!r} (looked in "
                f"{os.getcwd()} and sys.path); unset it if this is not a Django project") from None
        raise
    log.debug("django.setup() done with %s=%s", SETTINGS_ENV, os.environ.get(SETTINGS_ENV))


def connections_per_greenlet() -> None:
    """Under gevent with sockets patched but not threads (``GEVENT_PATCHTHREAD=N``), keep
    Django's connections in a greenlet-local instead of the real thread-local they would
    all share. Patched threads, eventlet and unpatched processes need nothing.

    Done by :func:`setup` even when Django was set up already (a ``sitecustomize``, a
    script that called ``django.setup()`` first), once.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        return
    if monkey.is_module_patched("threading"):
        return  # threading.local is already per greenlet
    import gevent.local
    from django.db import connections

    if isinstance(connections._connections, gevent.local.local):
        return
    # Connections opened so far (by the main greenlet, during start-up) are closed first:
    # a replaced storage would drop them unclosed.
    for connection in connections.all(initialized_only=True):
        connection.close()
    connections._connections = gevent.local.local()
    log.debug("gevent without patched threads: Django's database connections are per greenlet")

