"""A proxy that stands for an object found again at every use (Celery's ``celery.local.Proxy``).

``current_app`` and a ``@shared_task`` are such proxies: a module imports them once, at
import time, but what they stand for depends on the moment of use (the app that is
current then, that app's copy of the task). Every attribute access, call, comparison and
``isinstance`` check goes to the object the resolver returns at that moment; nothing is
cached, so ``app.set_current()`` takes effect for proxies handed out long before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Proxy:
    """Forwards to ``resolve()``: attributes, calls, ``repr``, equality, hashing, ``bool``,
    ``dir`` and ``__class__`` (so ``isinstance(proxy, Celeriac)`` is true of ``current_app``).

    Code that must not resolve a proxy (looking for apps in a module without creating the
    default app) tests ``type(value)``, which is always :class:`Proxy` itself.
    """

    def __init__(self, resolve: Callable[[], Any], name: str | None = None) -> None:
        object.__setattr__(self, "_Proxy__resolve", resolve)
        object.__setattr__(self, "_Proxy__name", name)

    def _get_current_object(self) -> Any:
        """The object this proxy stands for now (Celery's name for it)."""
        return self.__resolve()

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() asks this
        try:
            return type(self._get_current_object())
        except Exception:
            return Proxy

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_Proxy__"):
            raise AttributeError(name)
        return getattr(self._get_current_object(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._get_current_object(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._get_current_object(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_current_object()(*args, **kwargs)

    def __dir__(self) -> list[str]:
        try:
            return dir(self._get_current_object())
        except Exception:
            return []

    def __repr__(self) -> str:
        try:
            return repr(self._get_current_object())
        except Exception as exc:
            name = self.__name or "object"
            return f"<Proxy for {name}, unresolved: {exc}>"

    def __str__(self) -> str:
        return str(self._get_current_object())

    def __bool__(self) -> bool:
        return bool(self._get_current_object())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Proxy):
            other = other._get_current_object()
        return bool(self._get_current_object() == other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self._get_current_object())
