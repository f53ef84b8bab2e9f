"""When the Django fixup applies to an app, and what it changes (Celery's rules).

No ``django.setup()`` happens here (the app is never finalized): the end-to-end tests in
``tests/e2e/test_django.py`` run a real Django project in worker processes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from celeriac import Celery, _state
from celeriac.contrib.django import fixup
from celeriac.contrib.django.task import DjangoTask  # imports Django only when used
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.task import Task

pytest.importorskip("django")  # tests/e2e/test_django.py fails instead under CI=true


@pytest.fixture(autouse=True)
def app_state() -> Iterator[None]:
    saved = (_state._tls.app, _state._default_app, _state._last_current)
    yield
    _state._tls.app, _state._default_app, _state._last_current = saved


class MyTask(Task):  # type: ignore[type-arg]
    pass


def test_settings_module_set_makes_django_task_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
    app = Celery("proj", broker="memory://")
    assert app.Task is DjangoTask and fixup.applies(app)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert isinstance(add, DjangoTask)
    assert Celery("proj", broker="memory://", fixups=["celery.fixups.django:fixup"]).Task is DjangoTask


def test_task_cls_or_no_fixups_or_no_settings_module_keep_the_plain_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
    assert Celery("proj", broker="memory://", task_cls=MyTask).Task is MyTask  # still applies
    off = Celery("proj", broker="memory://", fixups=[])
    assert off.Task is Task and not fixup.applies(off)
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")
    plain = Celery("proj", broker="memory://")
    assert plain.Task is Task and not fixup.applies(plain)


def test_other_fixups_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="only Django's fixup"):
        Celery("proj", fixups=["proj.fixups:mine"])
    with pytest.raises(ConfigurationError, match="a list of fixup names"):
        Celery("proj", fixups="celery.fixups.django:fixup")


def test_the_fixup_makes_the_app_the_default_when_there_is_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
    _state.set_default_app(None)
    app = Celery("proj", broker="memory://", set_as_current=False)
    assert _state.get_default_app() is app
    other = Celery("other", broker="memory://", set_as_current=False)
    assert _state.get_default_app() is app is not other


def test_on_commit_checks_the_call_before_the_transaction_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "proj.settings")
    app = Celery("proj", broker="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match=r"task .*add"):
        add.delay_on_commit(1)  # type: ignore[attr-defined]
    with pytest.raises(UnknownSettingError, match="countdon"):
        add.apply_async_on_commit((1, 2), countdon=3)  # type: ignore[attr-defined]


def test_a_settings_module_that_does_not_exist_is_a_one_line_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "no_such_proj.settings")
    message = "DJANGO_SETTINGS_MODULE='no_such_proj.settings': no module named 'no_such_proj'"
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        fixup.setup_before_app()
