"""Finding the app named by ``-A``.

``-A`` takes ``module``, ``module:attribute``, ``path/to/file.py`` or
``path/to/file.py:attribute``, resolved from the current directory like
``python -m`` would. Without an attribute the module's ``app`` is used, or its
only :class:`Celeriac` instance.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

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
    if target.endswith(".py") or os.sep in target:
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


def load_app(spec: str) -> Celeriac:
    """Import and return the app named by ``spec``."""
    from celeriac.app import Celeriac

    module_part, _, attribute = spec.partition(":")
    if not module_part:
        raise ConfigurationError("-A needs a module, e.g. -A tasks or -A proj.tasks:app")
    module = _import(module_part)
    if attribute:
        if not hasattr(module, attribute):
            raise ConfigurationError(
                f"-A {spec!r}: module {module_part!r} has no attribute {attribute!r}")
        app = getattr(module, attribute)
        if not isinstance(app, Celeriac):
            raise ConfigurationError(f"-A {spec!r}: {attribute!r} is not a Celeriac app")
        return app
    found = getattr(module, "app", None)
    if isinstance(found, Celeriac):
        return found
    apps = [value for value in vars(module).values() if isinstance(value, Celeriac)]
    if len(apps) != 1:
        raise ConfigurationError(
            f"-A {spec!r}: {'no' if not apps else 'several'} Celeriac apps in module "
            f"{module_part!r}; name one with -A {module_part}:ATTRIBUTE")
    return apps[0]


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
        if module is None:
            continue
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
