"""Classes that need an optional client library, imported on first use.

Brokers and result backends that need one (redis, amqp) are registered as
``"module:Class"`` strings, so ``import celeriac`` never imports -- or requires
-- a client the user does not use. :class:`SchemeRegistry` is that registry, one
for brokers (:mod:`celeriac.brokers`) and one for result backends
(:mod:`celeriac.backends`): the same lookup, the same errors.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar
from urllib.parse import urlparse

from celeriac.exceptions import ConfigurationError

T = TypeVar("T")


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


class SchemeRegistry(Generic[T]):
    """Classes by URL scheme: ``loaded`` ones (imported already), and ``lazy`` ones as
    ``"module:Class"``, imported on first use and then moved into ``loaded``.

    The packages keep the two dicts as their public names (``BROKERS``,
    ``LAZY_BROKERS``...), so what a user registers there is found here.
    """

    def __init__(self, noun: str, loaded: dict[str, type[T]], lazy: dict[str, str]) -> None:
        #: What a class is, in errors: ``"broker"``, ``"result backend"``.
        self.noun = noun
        self.loaded = loaded
        self.lazy = lazy

    def known_schemes(self) -> list[str]:
        """Every scheme served, sorted."""
        return sorted(self.loaded.keys() | self.lazy.keys())

    def _unknown(self, what: str) -> ConfigurationError:
        known = ", ".join(f"{name}://" for name in self.known_schemes())
        return ConfigurationError(f"unknown {self.noun} {what}; known schemes: {known}")

    def cls(self, scheme: str) -> type[T]:
        """The class serving ``scheme``, importing it if it is a lazy one."""
        found = self.loaded.get(scheme)
        if found is not None:
            return found
        target = self.lazy.get(scheme)
        if target is None:
            raise self._unknown(f"scheme {scheme!r}")
        loaded: type[T] = import_class(target, f"the {scheme}:// {self.noun}")
        self.loaded[scheme] = loaded
        return loaded

    def for_url(self, url: str) -> type[T]:
        """The class serving ``url``'s scheme (an unknown one: an error naming the URL)."""
        scheme = urlparse(url).scheme
        if scheme not in self.loaded and scheme not in self.lazy:
            raise self._unknown(f"URL {url!r} (scheme {scheme!r})")
        return self.cls(scheme)
