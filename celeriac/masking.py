"""Secrets out of what a worker shows about itself (``celeriac inspect stats`` and ``conf``).

Replies to remote control travel through the broker to whoever asks, so a
password in ``broker_url`` or a setting named like a secret is masked before it
leaves the node, the way Celery masks its ``report``: URL passwords become
``**``, and values of settings whose name says API, TOKEN, KEY, SECRET, PASS,
SIGNATURE or DATABASE become ``********`` (nested mappings too).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: Setting (or nested key) names whose values are secret.
SECRET_NAMES = re.compile("API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE", re.IGNORECASE)
MASK = "********"


def mask_url(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://:**@host:6379/0``; other text unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:**@{host}"))


def mask_value(name: str, value: Any) -> Any:
    """``value`` of setting (or key) ``name`` fit to show: secrets masked, JSON-safe."""
    if SECRET_NAMES.search(name):
        return MASK
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {str(key): mask_value(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value("", item) for item in value]
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def mask_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as a worker shows them: every value through :func:`mask_value`."""
    return {name: mask_value(name, value) for name, value in settings.items()}
