"""``app.autodiscover_tasks()``: import the ``tasks`` module of each package, as Celery does.

A Celery project lists its packages (or Django's ``INSTALLED_APPS``) rather than every task
module: for each package, ``<package>.tasks`` (``related_name``) is imported if it exists.
A package without one is normal and skipped; an ``ImportError`` raised *inside* an existing
tasks module (a missing dependency, a typo in an import) is a real error and propagates,
as in Celery: swallowing it would leave a worker that silently lacks those tasks.

The list may be a callable (``lambda: settings.INSTALLED_APPS``), called only when the
modules are imported, because Django's settings are not ready while ``celery.py`` runs.
The import happens when the app is finalized (``celeriac worker`` and each worker
process finalize their app), or at once with ``force=True``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType

from celeriac.config import cwd_in_path

log = logging.getLogger("celeriac.discovery")

#: What ``packages`` may be: a list of package names, or a callable returning one.
Packages = Iterable[str] | Callable[[], Iterable[str]] | None


@dataclass(frozen=True)
class Discovery:
    """One ``autodiscover_tasks`` call, waiting for the app to be finalized."""

    packages: Packages
    related_name: str | None

    def run(self) -> list[ModuleType]:
        """Import the related modules now; returns those that exist."""
        return autodiscover(self.packages, self.related_name)


def autodiscover(packages: Packages, related_name: str | None = "tasks") -> list[ModuleType]:
    """Import ``<package>.<related_name>`` for each package that has one (the packages
    themselves when ``related_name`` is empty). No packages: Django's installed apps, when
    Django is configured, else nothing."""
    names = list(packages() if callable(packages) else packages or django_packages())
    found: list[ModuleType] = []
    with cwd_in_path():
        for package in dict.fromkeys(names):
            module = find_related_module(package, related_name)
            if module is not None:
                found.append(module)
    log.debug("autodiscover_tasks(%s, related_name=%r) imported %s", names, related_name,
              [module.__name__ for module in found])
    return found


def find_related_module(package: str, related_name: str | None) -> ModuleType | None:
    """``package.related_name`` imported, or None when that module does not exist.

    ``package`` may name a class inside a module (Django's ``"polls.apps.PollsConfig"``):
    when it is not a module, its parent is used, as Celery does.
    """
    try:
        module = importlib.import_module(package)
        if not related_name:
            return module
    except ModuleNotFoundError as exc:
        parent = package.rpartition(".")[0]
        if not parent or exc.name != package:
            raise
        package = parent
    module_name = f"{package}.{related_name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None  # the package has no such module: nothing to discover there
        raise  # raised by an import inside the module: a real error


def django_packages() -> list[str]:
    """The installed apps' packages when Django is importable and its settings are
    configured; an empty list otherwise (Celery's Django fixup does the same)."""
    try:
        from django.conf import settings  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return []
    if not settings.configured:
        return []
    from django.apps import apps  # type: ignore[import-not-found,unused-ignore]

    if apps.ready:
        return [config.name for config in apps.get_app_configs()]
    return [str(name) for name in settings.INSTALLED_APPS]
