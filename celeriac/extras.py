"""Classes that need an optional client library, imported on first use.

Brokers and result backends that need one (redis, amqp) are registered as
``"module:Class"`` strings, so ``import celeriac`` never imports -- or requires
-- a client the user does not use.
"""

from __future__ import annotations

import importlib

from celeriac.exceptions import ConfigurationError


def import_class(target: str, what: str) -> type:
    """Import ``"module:Class"``; a missing library names the extra that installs it.

    ``what`` names the user's choice in the error (``"the rediss:// broker"``). The
    extra is named after the module (redis), not the URL scheme (rediss, unix).
    """
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = module_name.rpartition(".")[2]
        raise ConfigurationError(f"{what} needs an extra package: {exc} "
                                 f"(try: pip install 'celeriac[{extra}]')") from exc
    loaded: type = getattr(module, class_name)
    return loaded
