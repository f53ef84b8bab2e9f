"""Jinja filters of the dashboard's templates: times, ages and previews of values.

They return plain text; Jinja's autoescaping escapes it where it is written, so a value
holding markup (a task argument ``<script>...``) shows as text and never runs.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from flask import Flask

#: Characters of a value (arguments, a result) shown before it is cut.
PREVIEW_LIMIT = 500


def age(seconds: float | None) -> str:
    """``0.4 s``, ``12 s``, ``5 min``, ``3.2 h``, ``2.0 d``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def since(timestamp: float | None) -> str:
    """How long ago a unix time was."""
    return "-" if not timestamp else age(max(0.0, time.time() - timestamp))


def until(timestamp: float | None) -> str:
    """How long until a unix time: ``in 12 s``, or ``now`` when it has come."""
    if not timestamp:
        return "-"
    left = timestamp - time.time()
    return "now" if left <= 0 else f"in {age(left)}"


def utc(timestamp: float | None) -> str:
    """A unix time as ``2026-12-04 12:31:47 UTC``."""
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def preview(value: Any, limit: int = PREVIEW_LIMIT) -> str:
    """A value as JSON (its repr when JSON cannot carry it), cut at ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def register(app: Flask) -> None:
    app.add_template_filter(age)
    app.add_template_filter(since)
    app.add_template_filter(until)
    app.add_template_filter(utc)
    app.add_template_filter(preview)
