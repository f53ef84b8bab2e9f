"""The app the pytest fixtures create: everything in this process, nothing to clean up.

:func:`TestApp` is Celery's ``celery.contrib.testing.app.TestApp`` for celeriac:
an app whose broker and result backend are ``memory://`` (its own, so two test apps
never see each other's messages), whatever the environment says, with the
``celery.ping`` task registered. ``config`` is applied over those defaults and
checked like any setting: a setting celeriac does not have is an error that
suggests the closest one, not silently ignored.

As in Celery, a test app is not made the current app when it is created
(``set_as_current=False``), so creating one does not change what ``current_app``
means for the rest of the run; it does get every ``@shared_task`` task, and an
embedded worker (or ``depends_on_current_app``) makes it current while it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.app import Celeriac

#: The test app's settings before ``config`` (Celery's ``DEFAULT_TEST_CONFIG``).
DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "broker_url": "memory://",
    "result_backend": "memory://",
    "accept_content": ["json"],
}


def TestApp(name: str | None = None, config: Mapping[str, Any] | None = None, *,
            broker: str | None = None, backend: str | None = None,
            **kwargs: Any) -> Celeriac:
    """A new app for one test (or one session): ``memory://`` broker and backend unless
    ``broker``/``backend`` or ``config`` say otherwise; other keywords go to
    :class:`~celeriac.app.Celeriac` (``task_cls=``, or settings)."""
    from celeriac.app import Celeriac
    from celeriac.contrib.testing.tasks import register_ping

    settings = {**DEFAULT_TEST_CONFIG, **(config or {})}
    if broker is not None:
        settings.pop("broker_url", None)
    if backend is not None:
        settings.pop("result_backend", None)
    kwargs.setdefault("set_as_current", False)
    app = Celeriac(name or "celeriac.tests", broker=broker, backend=backend,
                   **{**settings, **kwargs})
    register_ping(app)
    return app
