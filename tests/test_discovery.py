"""Discovery and shared tasks (issue 10, B2): ``shared_task``, ``current_app``,
``app.autodiscover_tasks`` and how ``-A`` finds the app, all in this process.

Every test starts from the process state it found (current, default and last app, the
shared-task declarations) and puts it back, so that shared tasks declared here do not
land on the apps of other test modules.
"""

from __future__ import annotations

import gc
import sys
import textwrap
import threading
import types
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, ConfigurationError, Task, _state, current_app, shared_task
from celeriac.loader import load_app


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    saved = (_state._tls.app, _state._default_app, _state._last_current)
    callbacks = list(_state._on_app_created)
    modules = set(sys.modules)
    yield
    _state._tls.app, _state._default_app, _state._last_current = saved
    _state._on_app_created[:] = callbacks
    for name in set(sys.modules) - modules:
        if name.startswith(("disc_", "proj_")):
            del sys.modules[name]


def new_app(name: str, **kwargs: Any) -> Celery:
    return Celery(name, broker="memory://", backend="memory://", **kwargs)


# -- shared_task -----------------------------------------------------------------------------
def test_shared_task_is_registered_on_every_app_existing_and_future() -> None:
    before = new_app("before")

    @shared_task
    def total(x: int, y: int) -> int:
        """Adds."""
        return x + y

    after = new_app("after")
    name = f"{__name__}.test_shared_task_is_registered_on_every_app_existing_and_future.<locals>.total"
    assert name in before.tasks and name in after.tasks
    assert before.tasks[name] is not after.tasks[name]
    assert before.tasks[name].app is before and after.tasks[name].app is after
    # The proxy is the current app's task: the last app created (set_as_current=True).
    assert total.app is after and total.name == name
    assert total(2, 3) == 5
    before.set_current()
    assert total.app is before
    assert total.delay(1, 2).app is before  # sent with the current app
    # It passes for a task and for the function it wraps.
    assert isinstance(total, Task)
    assert total.__name__ == "total" and total.__doc__ == "Adds."
    assert total.__wrapped__(1, 1) == 2  # type: ignore[attr-defined]


def test_an_app_with_shared_tasks_can_still_be_collected() -> None:
    @shared_task
    def noop() -> None:
        return None

    app = new_app("temporary", set_as_current=False)
    assert noop.__wrapped__ is not None  # type: ignore[attr-defined]
    gone = weakref.ref(app)
    del app
    gc.collect()
    assert gone() is None


def test_shared_task_options_and_the_apps_task_class() -> None:
    class Audited(Task[Any, Any]):
        audited = True

    plain = new_app("plain")
    audited = new_app("audited", task_cls=Audited)

    @shared_task(bind=True, name="orders.where", max_retries=7)
    def where(self: Any) -> str:
        return str(self.app.main)

    assert plain.tasks["orders.where"].options.max_retries == 7
    assert type(plain.tasks["orders.where"]) is Task
    assert type(audited.tasks["orders.where"]) is Audited  # built by each app's task_cls
    assert where() == "audited"
    plain.set_current()
    assert where() == "plain"


def test_an_app_that_has_the_name_already_keeps_its_task() -> None:
    other = new_app("other")

    @other.task(name="reports.build")
    def build_other() -> str:
        return "other's"

    @shared_task(name="reports.build")
    def build() -> str:
        return "shared"

    later = new_app("later")
    assert later.tasks["reports.build"].fn is build.__wrapped__  # type: ignore[attr-defined]
    assert other.tasks["reports.build"].fn is build_other.__wrapped__
    other.set_current()
    assert build() == "other's"  # the proxy uses the task the current app has


def test_shared_task_checks_its_options_at_the_decorator() -> None:
    with pytest.raises(ConfigurationError, match="time_limit"):
        shared_task(time_limt=5)  # a typo close to an option
    with pytest.raises(ConfigurationError, match="@shared_task"):
        shared_task(len, len)  # type: ignore[call-overload]


# -- current_app -----------------------------------------------------------------------------
def test_current_app_follows_set_as_current_set_current_and_set_default() -> None:
    first = new_app("first")
    assert current_app.main == "first" and isinstance(current_app, Celery)
    assert first.set_as_current is True
    new_app("quiet", set_as_current=False)
    assert current_app.main == "first"  # set_as_current=False leaves it alone
    second = new_app("second")
    assert current_app._get_current_object() is second  # type: ignore[attr-defined]
    first.set_current()
    assert current_app._get_current_object() is first  # type: ignore[attr-defined]

    # Another thread has no current app of its own: the default, once there is one.
    seen: list[Any] = []

    def look() -> None:
        seen.append(current_app._get_current_object())  # type: ignore[attr-defined]

    second.set_default()
    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    assert seen == [second]
    assert current_app._get_current_object() is first  # type: ignore[attr-defined]


def test_without_any_app_current_app_is_a_default_app_created_on_demand() -> None:
    _state._tls.app = _state._default_app = _state._last_current = None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    assert app.main == "default" and _state.get_default_app() is app
    assert current_app._get_current_object() is app  # type: ignore[attr-defined]


# -- autodiscover_tasks ----------------------------------------------------------------------
def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package ``disc_<id>`` on sys.path: ``orders`` has tasks, ``empty`` has none,
    ``broken``'s tasks module imports something missing, ``other`` has ``jobs``."""
    top = f"disc_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path, {
        f"{top}/__init__.py": "",
        f"{top}/orders/__init__.py": "",
        f"{top}/orders/tasks.py": """
            from celeriac import shared_task

            @shared_task
            def total(prices):
                return sum(prices)
            """,
        f"{top}/empty/__init__.py": "",
        f"{top}/broken/__init__.py": "",
        f"{top}/broken/tasks.py": "import disc_no_such_dependency\n",
        f"{top}/other/__init__.py": "",
        f"{top}/other/jobs.py": "from celeriac import shared_task\n\n"
                                "@shared_task\ndef job():\n    return 1\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    return top


def test_autodiscover_imports_lazily_at_finalize(tree: str) -> None:
    app = new_app("lazy")
    app.autodiscover_tasks([f"{tree}.orders", f"{tree}.empty"])
    assert f"{tree}.orders.tasks" not in sys.modules  # nothing imported yet
    app.finalize()
    assert f"{tree}.orders.tasks" in sys.modules
    assert f"{tree}.orders.tasks.total" in app.tasks
    assert f"{tree}.empty.tasks" not in sys.modules  # a package without tasks is skipped


def test_autodiscover_force_imports_at_once(tree: str) -> None:
    app = new_app("forced")
    app.autodiscover_tasks([f"{tree}.orders"], force=True)
    assert f"{tree}.orders.tasks.total" in app.tasks
    # After finalize, a new call imports at once too (there is no later finalize).
    app.finalize()
    app.autodiscover_tasks([f"{tree}.other"], related_name="jobs")
    assert f"{tree}.other.jobs.job" in app.tasks


def test_autodiscover_takes_a_callable_called_at_finalize(tree: str) -> None:
    calls: list[int] = []

    def packages() -> list[str]:
        calls.append(1)
        return [f"{tree}.orders", f"{tree}.other"]

    app = new_app("lazylist")
    app.autodiscover_tasks(packages)
    assert calls == []
    app.finalize()
    assert calls == [1]
    assert f"{tree}.orders.tasks.total" in app.tasks
    assert f"{tree}.other.jobs.job" not in app.tasks  # related_name is "tasks"


def test_an_import_error_inside_a_tasks_module_is_not_swallowed(tree: str) -> None:
    app = new_app("broken")
    app.autodiscover_tasks([f"{tree}.orders", f"{tree}.broken"])
    with pytest.raises(ModuleNotFoundError, match="disc_no_such_dependency"):
        app.finalize()
    with pytest.raises(ModuleNotFoundError, match="disc_no_such_dependency"):
        app.autodiscover_tasks([f"{tree}.broken"], force=True)


def test_a_missing_package_is_an_error(tree: str) -> None:
    app = new_app("missing")
    with pytest.raises(ModuleNotFoundError, match="disc_nothing_here"):
        app.autodiscover_tasks(["disc_nothing_here"], force=True)


def test_without_packages_it_uses_djangos_installed_apps_only_when_configured(
        tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = new_app("nodjango")
    app.autodiscover_tasks(force=True)  # django is not installed here: nothing to do
    assert not [name for name in app.tasks if name.startswith(tree)]

    django = types.ModuleType("django")
    conf = types.ModuleType("django.conf")
    apps_module = types.ModuleType("django.apps")
    settings = types.SimpleNamespace(configured=False, INSTALLED_APPS=[f"{tree}.orders"])
    conf.settings = settings  # type: ignore[attr-defined]
    apps_module.apps = types.SimpleNamespace(ready=False)  # type: ignore[attr-defined]
    for name, module in (("django", django), ("django.conf", conf), ("django.apps", apps_module)):
        monkeypatch.setitem(sys.modules, name, module)
    app.autodiscover_tasks(force=True)  # settings not configured: nothing
    assert f"{tree}.orders.tasks.total" not in app.tasks
    settings.configured = True
    app.autodiscover_tasks(force=True)
    assert f"{tree}.orders.tasks.total" in app.tasks


# -- -A: finding the app ---------------------------------------------------------------------
CELERY_PY = """
from celeriac import Celery, current_app

app = Celery("{name}", broker="memory://", backend="memory://")
"""


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``proj_<id>`` whose ``__init__`` does not import its ``celery`` module."""
    top = f"proj_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path, {
        f"{top}/__init__.py": "",
        f"{top}/celery.py": CELERY_PY.format(name=top),
        f"{top}/named/__init__.py": CELERY_PY.replace("app =", "celery =").format(name="named"),
        f"{top}/single.py": CELERY_PY.replace("app =", "worker_app =").format(name="single"),
        f"{top}/several.py": CELERY_PY.replace("app =", "one =").format(name="one")
                             + "two = Celery('two')\n",
        f"{top}/none.py": "from celeriac import current_app\n",
    })
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return top


def test_dash_a_finds_the_app_as_celery_does(layout: str) -> None:
    assert load_app(layout).main == layout  # proj -> proj.celery -> app
    assert load_app(f"{layout}.celery").main == layout
    assert load_app(f"{layout}.celery:app").main == layout
    assert load_app(f"{layout}.celery.app").main == layout  # module.attribute
    assert load_app(f"{layout}.named").main == "named"  # the `celery` attribute
    assert load_app(f"{layout}.single").main == "single"  # its only app
    assert load_app(f"{layout}.single.worker_app").main == "single"


def test_dash_a_errors_say_what_was_tried(layout: str) -> None:
    _state._tls.app = _state._default_app = _state._last_current = None
    with pytest.raises(ConfigurationError) as caught:
        load_app(f"{layout}.none")
    message = str(caught.value)
    assert f"tried {layout}.none.app, {layout}.none.celery" in message
    assert f"an app instance in module {layout}.none" in message
    assert _state.get_default_app() is None  # current_app in the module was not resolved
    with pytest.raises(ConfigurationError, match=r"several apps .*\(one, two\)"):
        load_app(f"{layout}.several")
    with pytest.raises(ConfigurationError, match=r"module '.*celery' has no attribute 'nothing'"):
        load_app(f"{layout}.celery.nothing")
    with pytest.raises(ConfigurationError, match=r"nor .*absent' with an attribute 'nothing'"):
        load_app(f"{layout}.absent.nothing")
    with pytest.raises(ConfigurationError, match="has no attribute 'nothing'"):
        load_app(f"{layout}.celery:nothing")
    with pytest.raises(ConfigurationError, match="no module named 'disc_absent'"):
        load_app("disc_absent")


# -- the test helpers ------------------------------------------------------------------------
def test_test_apps_are_not_made_current_but_their_worker_makes_them_current() -> None:
    from celeriac.contrib.testing.app import TestApp
    from celeriac.contrib.testing.worker import start_worker

    project = new_app("project")

    @shared_task
    def current_name() -> str:
        return str(current_app.main)

    test_app = TestApp("under.test")
    assert current_app._get_current_object() is project  # type: ignore[attr-defined]
    with start_worker(test_app, pool="threads", loglevel=None):
        assert current_app._get_current_object() is test_app  # type: ignore[attr-defined]
        # Sent with the current app (the test app), run by a worker thread whose
        # current app is the default: the test app too.
        assert current_name.delay().get(timeout=10) == "under.test"
    assert current_app._get_current_object() is project  # type: ignore[attr-defined]


# -- current_task ------------------------------------------------------------------------------
def test_current_task_is_the_running_task_and_none_outside() -> None:
    from celeriac import current_task, uuid
    from celeriac.contrib.testing.worker import start_worker

    app = Celery("cur", broker="memory://", backend="memory://", set_as_current=False)

    @app.task
    def who() -> dict[str, Any]:
        assert app.current_task is current_task._get_current_object()  # type: ignore[attr-defined]
        return {"name": current_task.name, "id": current_task.request.id, "bool": bool(current_task)}

    # Outside any task it stands for None, so ``if current_task:`` is false, as in Celery.
    assert not current_task
    assert app.current_task is None
    task_id = uuid()
    assert isinstance(task_id, str) and len(task_id) == 36
    eager = who.apply(task_id=task_id).get()
    assert eager == {"name": who.name, "id": task_id, "bool": True}
    with start_worker(app, pool="threads", perform_ping_check=False):
        sent = who.apply_async(task_id=uuid())
        assert sent.get(timeout=10) == {"name": who.name, "id": sent.id, "bool": True}
    assert not current_task  # reset after each run
