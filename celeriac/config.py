"""Configuring an app the way a Celery project does: where its settings come from.

Three sources, each turned into entries of the one registry (:mod:`celeriac.settings`):
Celery's constructor arguments (:func:`check_arguments`, :func:`checked_settings`), a
config object (:func:`read`, for ``app.config_from_object``), and the ``imports`` and
``include`` modules that register tasks (:func:`import_modules`, for ``app.finalize``).

A Celery project keeps its settings in a module (``celeryconfig.py``), a class, or
Django's settings with a ``CELERY_`` prefix; :func:`read` turns any of those into a
plain ``{setting: value}`` mapping for :meth:`celeriac.settings.Settings.load_source`.

Which attributes are settings: a config object also holds imports, helpers and, for
Django, every other setting of the project. As in Celery, only names that are
settings are read: celeriac's and Celery's current names, and Celery's old
upper-case names (checked and mapped by :mod:`celeriac.settings`, so a Celery
setting celeriac lacks is an error that names it). Any other name is ignored unless
it is so close to a setting name that it is surely a typo (``brokr_url``), which is
an error with a suggestion: a mistake in a config file should not pass silently,
and an unrelated helper variable should not break the app.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import TYPE_CHECKING, Any

from celeriac.celery_settings import OLD_NAMES
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.settings import SETTINGS, canonical_name, is_known, suggest, suggest_setting

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.discovery import Discovery

log = logging.getLogger("celeriac.config")

#: How close (difflib ratio) an unknown attribute name must be to a setting name to be
#: taken for a misspelling of it. Higher than for ``app.conf.update`` (where every name
#: must be a setting), because a config object legitimately holds other names.
TYPO_CUTOFF = 0.8


#: The keyword arguments of ``Celeriac()`` that are not settings (for did-you-mean hints).
ARGUMENTS = ("main", "broker", "backend", "include", "task_cls", "config_source",
             "config_source_silent", "namespace", "changes", "set_as_current", "loader", "fixups")

#: Celery's constructor arguments celeriac has nothing for: what each would replace.
UNSUPPORTED_ARGUMENTS = {
    "amqp": "a custom AMQP class (celeriac does not speak AMQP)",
    "events": "a custom events class (celeriac's events are a stream in the broker)",
    "log": "a custom logging class (use the setup_logging signal)",
    "control": "a custom remote-control class",
    "tasks": "a ready-made task registry (register tasks with @app.task)",
    "autofinalize": "lazy task registration (celeriac registers a task when it is decorated)",
    "strict_typing": "argument checking at call time",
}

#: ``loader=`` values that name the loading celeriac does (Celery's AppLoader).
APP_LOADERS = {"app", "celery.loaders.app:AppLoader", "celery.loaders.app.AppLoader"}


def check_arguments(settings: dict[str, Any], *, loader: Any, fixups: Any) -> None:
    """Check the constructor's Celery-only arguments; remove from ``settings`` those left
    at Celery's default (None), so that only settings remain.

    ``loader`` may name Celery's app loader, which is what celeriac does (config objects,
    then ``imports``/``include`` at finalize); ``fixups`` may only name Django's
    (:mod:`celeriac.contrib.django.fixup`). Anything else is refused with the reason,
    rather than accepted and silently not run.
    """
    for name, what in UNSUPPORTED_ARGUMENTS.items():
        if name in settings and settings.pop(name) is not None:
            raise ConfigurationError(f"Celery({name}=...) is a Celery argument celeriac does "
                                     f"not support: it sets {what}")
    if loader is not None and loader not in APP_LOADERS:
        hint = (" (to read the module named by CELERY_CONFIG_MODULE, call "
                "app.config_from_envvar('CELERY_CONFIG_MODULE'))" if loader == "default" else "")
        raise ConfigurationError(
            f"Celery(loader={loader!r}) is not supported: celeriac reads configuration with "
            f"config_from_object/config_from_envvar and imports the imports and include modules "
            f"itself, as Celery's app loader does{hint}")
    from celeriac.contrib.django.fixup import wanted

    wanted(fixups)  # refuses any fixup but Django's


def checked_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` constructor keywords, once each name is known to be a setting; a misspelt
    one is an error suggesting the nearest argument or setting (``brokr`` -> ``broker``)."""
    for name in given:
        try:
            canonical_name(name)
        except UnknownSettingError:
            hint = suggest(name, [*ARGUMENTS, *SETTINGS])
            raise UnknownSettingError(f"unknown argument or setting {name!r}{hint}") from None
    return dict(given)


@contextmanager
def cwd_in_path() -> Iterator[None]:
    """The current directory on ``sys.path`` while importing, as Celery's import_from_cwd:
    ``celeryconfig.py`` and task modules next to the project are found wherever the app
    was imported from, and the caller's ``sys.path`` is left as it was."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            with suppress(ValueError):
                sys.path.remove(cwd)


def import_modules(app: Celeriac, names: Iterable[str],
                   discoveries: Iterable[Discovery] = ()) -> list[ModuleType]:
    """Send ``import_modules`` (a receiver that raises stops it, as in Celery), run the
    ``autodiscover_tasks`` ``discoveries`` (where Celery runs them: on that signal), then
    import ``names`` in order, each once. A module that does not exist is a one-line
    :class:`ConfigurationError`; an error raised inside one propagates as it is."""
    from celeriac import signals

    for _receiver, response in signals.import_modules.send(sender=app):
        if isinstance(response, Exception):
            raise response
    modules: list[ModuleType] = [module for discovery in discoveries for module in discovery.run()]
    with cwd_in_path():
        for name in dict.fromkeys(names):
            try:
                modules.append(importlib.import_module(name))
            except ModuleNotFoundError as exc:
                if exc.name and (name == exc.name or name.startswith(f"{exc.name}.")):
                    raise ConfigurationError(
                        f"imports/include: no module named {exc.name!r} (looked in "
                        f"{os.getcwd()} and sys.path)") from None
                raise
    return modules


def import_object(path: str) -> Any:
    """The object named by ``path``: ``"pkg.mod"``, ``"pkg.mod:attr"`` or ``"pkg.mod.attr"``.

    Imported from the current directory too (as Celery does), so that ``celeryconfig``
    next to the project is found by ``celeriac worker`` started there. ``"pkg.mod.attr"``
    is tried as a module first, then as an attribute of ``pkg.mod``. A module that is
    missing raises :class:`ImportError` (the module's own, when neither reading fits) and
    an attribute :class:`AttributeError`, as in Celery, where ``silent=True`` ignores both.
    Any other error raised inside the module while it is imported propagates as it is.
    """
    if not path:
        raise ConfigurationError("config_from_object: empty module name")
    module_name, colon, attribute = path.partition(":")
    missing: ModuleNotFoundError | None = None
    with cwd_in_path():
        if not colon:
            try:
                return importlib.import_module(path)
            except ModuleNotFoundError as exc:
                if exc.name != path or "." not in path:
                    raise
                missing = exc
            module_name, _, attribute = path.rpartition(".")
        module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        if missing is not None:
            raise missing from None
        raise AttributeError(f"config {path!r}: module {module_name!r} has no attribute "
                             f"{attribute!r}") from None


def _attributes(obj: Any) -> dict[str, Any]:
    """The public attributes of a module, class or object (a mapping as it is)."""
    if isinstance(obj, Mapping):
        return {str(key): value for key, value in obj.items()}
    values: dict[str, Any] = {}
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            values[name] = getattr(obj, name)
        except AttributeError:  # a property that raises, a lazy Django setting not set
            continue
    return values


def _is_code(value: Any) -> bool:
    """Imports and helpers a config module defines: modules, classes, functions."""
    return isinstance(value, ModuleType) or inspect.isclass(value) or inspect.isroutine(value)


def _prefix(namespace: str) -> str:
    return namespace.rstrip("_") + "_"


def settings_of(obj: Any, namespace: str | None = None) -> dict[str, Any]:
    """The settings held by ``obj`` (a module, class, object or mapping), by the names they
    were given there (old names are resolved later, with their warning).

    With ``namespace`` (``"CELERY"``) only ``CELERY_``-prefixed names are read, in the case
    of the prefix (``CELERY_BROKER_URL``), and the prefix is removed: ``broker_url``. As in
    Celery they are read in the current format only; an old name under the prefix
    (``CELERY_ALWAYS_EAGER``) is ignored with a warning, as Celery ignores it silently.
    """
    found: dict[str, Any] = {}
    for key, value in _attributes(obj).items():
        name = _namespaced(key, value, namespace) if namespace else _plain(key, value)
        if name is not None:
            found[name] = value
    return found


def _plain(key: str, value: Any) -> str | None:
    """``key`` if it is a setting name, None if it is something else; a typo raises."""
    if is_known(key):
        return key
    if (key.islower() or key.isupper()) and not _is_code(value):
        hint = suggest_setting(key, TYPO_CUTOFF)
        if hint:
            raise UnknownSettingError(f"unknown setting {key!r}{hint}")
    return None


def _namespaced(key: str, value: Any, namespace: str) -> str | None:
    """The setting ``key`` names under ``namespace``, None if it names none; a typo or a
    Celery setting celeriac lacks raises, naming ``key`` as the object spells it."""
    prefix = _prefix(namespace)
    stripped = key[len(prefix):] if key.startswith(prefix) else ""
    if not stripped or stripped != (stripped.upper() if prefix.isupper() else stripped.lower()):
        return None
    name = stripped.lower()
    if is_known(name):
        try:
            canonical_name(name)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{key} (namespace {namespace!r}): {exc}") from None
        return name
    if key in OLD_NAMES:
        new = OLD_NAMES[key]
        log.warning("%s is ignored: it is Celery's old name for %r, and with namespace=%r only "
                    "%s%s is read (Celery ignores it too)", key, new, namespace, prefix,
                    new.upper() if prefix.isupper() else new)
    elif not _is_code(value):
        hint = suggest_setting(name, TYPO_CUTOFF)
        if hint:
            raise UnknownSettingError(f"unknown setting {key!r} (namespace {namespace!r})"
                                      f"{_with_prefix(hint, prefix)}")
    return None


def _with_prefix(hint: str, prefix: str) -> str:
    """`` (did you mean 'broker_url'?)`` -> `` (did you mean 'CELERY_BROKER_URL'?)``."""
    name = hint.split("'")[1]
    return f" (did you mean {prefix + (name.upper() if prefix.isupper() else name)!r}?)"


def read(obj: Any, namespace: str | None = None, silent: bool = False) -> dict[str, Any] | None:
    """The settings of ``obj`` (an object, or a path for :func:`import_object`), or None
    when ``silent`` and the path cannot be imported."""
    if isinstance(obj, str):
        try:
            obj = import_object(obj)
        except (ImportError, AttributeError):
            if silent:
                log.debug("config_from_object(%r, silent=True): cannot import it, ignored", obj)
                return None
            raise
    return settings_of(obj, namespace)
