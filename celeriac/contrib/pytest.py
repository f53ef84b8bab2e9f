"""The pytest plugin: Celery's fixtures, under Celery's names, for celeriac apps.

Installing celeriac registers it (a ``pytest11`` entry point named like this module,
``celeriac.contrib.pytest``), so the fixtures are there in any project that has
celeriac installed; listing it in ``pytest_plugins`` or ``-p celeriac.contrib.pytest``
as Celery's docs say for theirs is harmless, and ``-p no:celeriac.contrib.pytest``
turns it off. It only adds fixtures and the ``celery`` marker: importing it imports
nothing of celeriac, and no fixture runs unless a test asks for it.

Function scope: ``celery_app`` (a new :func:`~celeriac.contrib.testing.app.TestApp`
per test: ``memory://`` broker and backend, ``celery_config`` applied, then the
test's ``@pytest.mark.celery(**overrides)``), ``celery_worker`` (an embedded worker
on it for the test, :func:`~celeriac.contrib.testing.worker.start_worker`),
``depends_on_current_app``. Session scope: ``celery_session_app``,
``celery_session_worker``, and the fixtures a project overrides to configure them --
``celery_config``, ``celery_parameters``, ``celery_includes``,
``celery_worker_pool``, ``celery_worker_parameters``, ``celery_enable_logging``,
``use_celery_app_trap``. ``docs/testing.md`` has examples and the differences from
Celery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.contrib.testing.worker import TestWorkController


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``celery`` marker (no unknown-marker warning; ``pytest --markers``)."""
    config.addinivalue_line(
        "markers", "celery(**overrides): override celeriac settings for a test case")


@contextmanager
def _create_app(request: pytest.FixtureRequest, config: Mapping[str, Any],
                parameters: Mapping[str, Any], enable_logging: bool) -> Iterator[Celeriac]:
    """A test app with ``config`` and the closest ``celery`` marker's overrides, closed
    afterwards; with ``enable_logging`` the ``celeriac`` logger also writes to stderr."""
    from celeriac.contrib.testing.app import TestApp
    from celeriac.contrib.testing.worker import LOG_FORMAT

    mark = request.node.get_closest_marker("celery")
    app = TestApp(config={**config, **(mark.kwargs if mark else {})}, **parameters)
    handler: logging.Handler | None = None
    if enable_logging:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger("celeriac").addHandler(handler)
    try:
        yield app
    finally:
        if handler is not None:
            logging.getLogger("celeriac").removeHandler(handler)
        app.close()


@contextmanager
def _worker(app: Celeriac, includes: Sequence[str], pool: str,
            parameters: Mapping[str, Any], enable_logging: bool) -> Iterator[TestWorkController]:
    """Import ``includes`` and run an embedded worker for ``app``.

    Without ``celery_enable_logging`` the worker leaves logging alone (pytest captures
    it as usual), as Celery's does for its test app; a ``loglevel`` in the worker
    parameters still sets it.
    """
    import importlib

    from celeriac.contrib.testing.worker import start_worker

    for module in includes:
        importlib.import_module(module)
    options = dict(parameters)
    if not enable_logging:
        options.setdefault("loglevel", None)
    with start_worker(app, pool=pool, **options) as worker:
        yield worker


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    """Override to return True to make tests fail that fall back to a default app.

    Accepted so that a conftest overriding it ports unchanged, but celeriac sets no
    trap: a test that uses ``current_app`` without ``depends_on_current_app`` (or a
    running ``celery_worker``) gets the process's current app, as with the trap off.
    """
    return False


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    """Override to return True for the embedded workers' log on stderr."""
    return False


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Override with module names to import before an embedded worker starts (tasks on
    the test app, signal receivers...)."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """Override to choose the embedded workers' pool: ``"solo"`` (default) or ``"threads"``."""
    return "solo"


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Override with settings for the test apps (over ``memory://`` broker and backend)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Override with keywords for the test app's constructor (``task_cls=``...)."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Override with keywords for the embedded workers (``queues``, ``concurrency``,
    ``shutdown_timeout``, ``perform_ping_check``... see ``start_worker``)."""
    return {}


def _warn_trap(wanted: bool) -> None:
    if wanted:
        logging.getLogger("celeriac.testing").warning(
            "use_celery_app_trap is True, but celeriac sets no trap: a test that falls back "
            "to the default app is not failed (docs/testing.md)")


@pytest.fixture(scope="session")
def celery_session_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
                       celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
                       use_celery_app_trap: bool) -> Iterator[Celeriac]:
    """One test app for the whole session (for session-scoped fixtures and workers)."""
    _warn_trap(use_celery_app_trap)
    with _create_app(request, celery_config, celery_parameters, celery_enable_logging) as app:
        yield app


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: Celeriac, celery_includes: Sequence[str],
                          celery_worker_pool: str, celery_worker_parameters: Mapping[str, Any],
                          celery_enable_logging: bool) -> Iterator[TestWorkController]:
    """An embedded worker on ``celery_session_app`` that lives for the whole session."""
    with _worker(celery_session_app, celery_includes, celery_worker_pool,
                 celery_worker_parameters, celery_enable_logging) as worker:
        yield worker


@pytest.fixture
def celery_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
               celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
               use_celery_app_trap: bool) -> Iterator[Celeriac]:
    """A new test app for this test: its own ``memory://`` broker and backend."""
    _warn_trap(use_celery_app_trap)
    with _create_app(request, celery_config, celery_parameters, celery_enable_logging) as app:
        yield app


@pytest.fixture
def celery_worker(celery_app: Celeriac, celery_includes: Sequence[str], celery_worker_pool: str,
                  celery_worker_parameters: Mapping[str, Any],
                  celery_enable_logging: bool) -> Iterator[TestWorkController]:
    """An embedded worker on ``celery_app`` for this test, stopped warm when it returns."""
    with _worker(celery_app, celery_includes, celery_worker_pool, celery_worker_parameters,
                 celery_enable_logging) as worker:
        yield worker


@pytest.fixture
def depends_on_current_app(celery_app: Celeriac) -> Iterator[Celeriac]:
    """``celery_app`` made the current (and default) app for the test, as Celery's fixture
    does, so ``current_app`` and ``@shared_task`` tasks use it; restored afterwards."""
    from celeriac._state import using_app

    with using_app(celery_app):
        yield celery_app
