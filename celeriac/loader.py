"""Finding the app named by ``-A``.

``-A`` takes ``module``, ``module:attribute``, ``module.attribute``,
``path/to/file.py`` or ``path/to/file.py:attribute``, resolved from the current
directory like ``python -m`` would. Without an attribute the app is found as
Celery's ``find_app`` finds it (:func:`load_app`): ``-A proj`` finds
``proj/celery.py``'s app.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, TypeGuard

from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celeriac


#: Modules this loader imported from a file path (not importable by name from the cwd).
_FROM_FILE: set[str] = set()


def file_module_name(path: str) -> str:
    """The module name ``import`` would give the file at ``path``: its stem."""
    return os.path.splitext(os.path.basename(path))[0]


def importable_name(module_name: str) -> str:
    """``module_name``, except that ``__main__`` (a script run directly or with
    ``python -m``) becomes the name a worker process imports that file under."""
    if module_name != "__main__":
        return module_name
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name)
    path = getattr(main, "__file__", None)
    return file_module_name(path) if path else module_name


def _import(target: str) -> ModuleType:
    if _is_file(target):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise ConfigurationError(f"-A {target!r}: no such file")
        # Named after the file, as ``import`` would name it, so its tasks get the same
        # names in every process (``myapp.add``), whichever way the app was found.
        name = file_module_name(path)
        existing = sys.modules.get(name)
        if existing is not None and os.path.abspath(getattr(existing, "__file__", None) or "") == path:
            return existing
        if existing is not None or name in sys.stdlib_module_names:
            name = "__celeriac_app__"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"-A {target!r}: cannot import that file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _FROM_FILE.add(name)
        sys.path.insert(0, os.path.dirname(path))
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(f"{exc.name}.")):
            raise ConfigurationError(
                f"-A {target!r}: no module named {exc.name!r} (looked in {os.getcwd()})") from None
        raise


def _is_app(value: object) -> TypeGuard[Celeriac]:
    """Whether ``value`` is an app, judged by its real type: ``current_app`` (a proxy) in a
    module's namespace is not resolved, which could create the default app."""
    from celeriac.app import Celeriac

    return issubclass(type(value), Celeriac)


def _is_file(target: str) -> bool:
    return target.endswith(".py") or os.sep in target


def _submodule(name: str) -> ModuleType | None:
    """Module ``name`` imported, or None if it does not exist (an error inside it raises)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def _app_in(module: ModuleType, name: str, tried: list[str]) -> Celeriac | None:
    """Celery's ``find_app`` on a module: its ``app``, its ``celery``, the same in its
    ``celery`` submodule (a package), then its only app instance."""
    for attribute in ("app", "celery"):
        tried.append(f"{name}.{attribute}")
        value = getattr(module, attribute, None)
        if _is_app(value):
            return value
    if getattr(module, "__path__", None) is not None:  # a package: look in pkg/celery.py
        tried.append(f"module {name}.celery")
        celery_module = _submodule(f"{module.__name__}.celery")
        if celery_module is not None:
            found = _app_in(celery_module, f"{name}.celery", tried)
            if found is not None:
                return found
    apps = {id(value): (attribute, value) for attribute, value in vars(module).items()
            if _is_app(value)}
    if len(apps) > 1:
        names = ", ".join(sorted(attribute for attribute, _ in apps.values()))
        raise ConfigurationError(f"-A {name!r}: several apps in module {module.__name__!r} "
                                 f"({names}); name one with -A {name}:ATTRIBUTE")
    tried.append(f"an app instance in module {module.__name__}")
    if apps:
        return next(iter(apps.values()))[1]
    return None


def load_app(spec: str) -> Celeriac:
    """Import and return the app named by ``spec``, as Celery's ``find_app`` does.

    ``module:attribute`` names it. ``a.b.c`` is the module ``a.b.c`` or, when there is
    no such module, the attribute ``c`` of ``a.b``. In a module the app is its ``app``
    or ``celery`` attribute, else (a package) the same in its ``celery`` submodule, else
    its one app instance: ``-A proj`` finds the app of ``proj/celery.py`` whether or not
    ``proj/__init__.py`` imports it. Nothing found is an error listing what was tried.
    """
    module_part, _, attribute = spec.partition(":")
    if not module_part:
        raise ConfigurationError("-A needs a module, e.g. -A proj, -A tasks or -A proj.tasks:app")
    if not attribute and not _is_file(module_part) and "." in module_part:
        try:
            module = _import(module_part)
        except ConfigurationError:  # no such module: maybe pkg.mod.attribute
            module_part, _, attribute = module_part.rpartition(".")
            try:
                module = _import(module_part)
            except ConfigurationError:
                raise ConfigurationError(
                    f"-A {spec!r}: no module named {spec!r}, nor {module_part!r} with an "
                    f"attribute {attribute!r} (looked in {os.getcwd()})") from None
    else:
        module = _import(module_part)
    if attribute:
        if not hasattr(module, attribute):
            raise ConfigurationError(
                f"-A {spec!r}: module {module.__name__!r} has no attribute {attribute!r}")
        value = getattr(module, attribute)
        if isinstance(value, ModuleType):
            module, module_part = value, f"{module_part}.{attribute}"
        elif not _is_app(value):
            raise ConfigurationError(f"-A {spec!r}: {attribute!r} is {type(value).__name__}, "
                                     "not a Celeriac app")
        else:
            return value
    tried: list[str] = []
    found = _app_in(module, module_part, tried)
    if found is None:
        raise ConfigurationError(
            f"-A {spec!r}: no Celeriac app found; tried {', '.join(tried)}. Name it with "
            f"-A {module_part}:ATTRIBUTE")
    return found


def locate_app(app: Celeriac) -> str:
    """An ``-A`` value that finds ``app`` again in a fresh interpreter.

    A script that imported its app (``from tasks import app``) holds it too: any
    other module comes before ``__main__``, so that a worker process imports
    ``tasks`` and not the script (whose ``app.worker_main()`` would start workers
    again, in every worker process).
    """
    modules = list(sys.modules.items())
    modules.sort(key=lambda item: item[0] == "__main__")
    for name, module in modules:
        if module is None or name == "celeriac" or name.startswith("celeriac."):
            continue  # celeriac's own state (celeriac._state holds the current app)
        for attribute, value in list(vars(module).items()):
            if value is app:
                spec = getattr(module, "__spec__", None)
                if name == "__main__" and spec is not None and spec.name:
                    return f"{spec.name}:{attribute}"  # run with python -m
                if name == "__main__" or name in _FROM_FILE:
                    path = getattr(module, "__file__", None)
                    if path:
                        return f"{os.path.abspath(path)}:{attribute}"
                    continue
                return f"{name}:{attribute}"
    raise ConfigurationError(
        "cannot find this app in any importable module; define it at module level")
