"""Configuration as a Celery project writes it: ``Celery(...)`` arguments,
``config_from_object`` in all its forms, namespaces, ``config_from_envvar``, Celery's
old setting names, Celery settings celeriac lacks, and ``include``/``imports``."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import celeriac
from celeriac import Celeriac, Celery
from celeriac import settings as settings_module
from celeriac.celery_settings import CELERY_NAMES, OLD_NAMES
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.settings import SETTINGS
from celeriac.signals import import_modules

CONFIG = """
import os
from datetime import timedelta

broker_url = "memory://"
task_default_queue = "from-module"
result_expires = timedelta(hours=1).total_seconds()
redis_host_of_mine = "a helper, not a setting"

def helper():
    return 1

class Conf:
    task_default_queue = "from-class"
    task_acks_late = False
"""

DJANGO_SETTINGS = """
DEBUG = True
INSTALLED_APPS = ["django.contrib.auth"]
SECRET_KEY = "x"
CELERY_BROKER_URL = "memory://"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_DEFAULT_QUEUE = "django"
CELERY_ONCE = {"backend": "a third-party package's setting"}
"""


@pytest.fixture
def pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable package ``cfgpkg`` (``cfgpkg.celeryconfig``, ``cfgpkg.settings``,
    ``cfgpkg.tasks``), removed from ``sys.modules`` afterwards."""
    root = tmp_path / "cfgpkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "celeryconfig.py").write_text(CONFIG)
    (root / "settings.py").write_text(DJANGO_SETTINGS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CELERIAC_BROKER_URL", "")
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", "")
    yield tmp_path
    for name in [name for name in sys.modules if name.split(".")[0] in {"cfgpkg", "cwdconfig"}]:
        del sys.modules[name]


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which old names already warned in this process (they warn once each)."""
    monkeypatch.setattr(settings_module, "_WARNED_OLD", set())


# -- the class and its constructor --------------------------------------------------------------
def test_celery_is_the_app_class_under_celerys_name() -> None:
    assert Celery is Celeriac
    assert celeriac.Celery is Celeriac
    assert "Celery" in celeriac.__all__


def test_constructor_takes_celerys_arguments() -> None:
    app = Celery("proj", broker="memory://", backend="memory://", include=["cfgpkg.tasks"],
                 changes={"task_default_queue": "changed"}, namespace="CELERY")
    assert app.conf.broker_url == "memory://"
    assert app.conf.result_backend == "memory://"  # backend= is result_backend
    assert app.conf.include == ["cfgpkg.tasks"]
    assert app.conf.task_default_queue == "changed"
    assert app.namespace == "CELERY"
    assert app.set_as_current is True
    ordered = Celery("proj", changes={"broker_url": "sqlite:///changes.db", "task_acks_late": False},
                     broker="sqlite:///broker.db", result_backend="memory://", backend="sqlite:///x.db")
    assert ordered.conf.broker_url == "sqlite:///broker.db"  # changes, then broker=, then keywords
    assert ordered.conf.result_backend == "memory://"
    assert ordered.conf.task_acks_late is False


def test_config_source_and_its_silent_flag(pkg: Path) -> None:
    app = Celery("proj", config_source="cfgpkg.celeryconfig")
    assert app.conf.task_default_queue == "from-module"
    quiet = Celery("proj", config_source="cfgpkg.missing", config_source_silent=True)
    assert quiet.conf.task_default_queue == "celery"
    with pytest.raises(ModuleNotFoundError):
        Celery("proj", config_source="cfgpkg.missing")


def test_misspelt_keyword_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(UnknownSettingError, match=r"'brokr'.*did you mean 'broker'"):
        Celery("proj", brokr="memory://")
    with pytest.raises(UnknownSettingError, match="did you mean 'task_default_queue'"):
        Celery("proj", task_default_queu="x")


def test_loader_fixups_and_celery_only_arguments() -> None:
    assert Celery("proj", loader="app").conf.broker_url
    assert Celery("proj", loader="celery.loaders.app:AppLoader", fixups=[], amqp=None)
    with pytest.raises(ConfigurationError, match="config_from_envvar"):
        Celery("proj", loader="default")
    with pytest.raises(ConfigurationError, match=r"loader=.*not supported"):
        Celery("proj", loader=object)
    assert Celery("proj", fixups=["celery.fixups.django:fixup"])  # Django's: see test_django.py
    with pytest.raises(ConfigurationError, match=r"fixups=.*only Django's fixup"):
        Celery("proj", fixups=["proj.fixups:mine"])
    for name in ("amqp", "events", "log", "control", "tasks", "autofinalize", "strict_typing"):
        with pytest.raises(ConfigurationError, match=f"Celery\\({name}=...\\) is a Celery argument"):
            Celery("proj", **{name: False})


def test_set_as_current_false_is_kept_and_leaves_the_current_app_alone() -> None:
    from celeriac import current_app

    before = current_app._get_current_object()  # type: ignore[attr-defined]
    app = Celery("proj", set_as_current=False)
    assert app.set_as_current is False
    assert current_app._get_current_object() is before  # type: ignore[attr-defined]


# -- config_from_object ----------------------------------------------------------------------
@pytest.mark.parametrize("source, queue", [
    ("cfgpkg.celeryconfig", "from-module"),
    ("cfgpkg.celeryconfig:Conf", "from-class"),
    ("cfgpkg.celeryconfig.Conf", "from-class"),
])
def test_config_from_object_by_path(pkg: Path, source: str, queue: str) -> None:
    app = Celery("proj")
    assert app.config_from_object(source) is True
    assert app.conf.task_default_queue == queue


def test_config_from_object_by_module_class_object_and_mapping(pkg: Path) -> None:
    import cfgpkg.celeryconfig as module

    app = Celery("proj")
    app.config_from_object(module)
    assert (app.conf.broker_url, app.conf.result_expires) == ("memory://", 3600.0)
    app.config_from_object(module.Conf)
    assert (app.conf.task_default_queue, app.conf.task_acks_late) == ("from-class", False)

    class Sub(module.Conf):
        def __init__(self) -> None:
            self.worker_concurrency = 3

    app.config_from_object(Sub())
    assert (app.conf.worker_concurrency, app.conf.task_acks_late) == (3, False)
    app.config_from_object({"task_default_queue": "from-dict"})
    assert app.conf.task_default_queue == "from-dict"
    app.config_from_object(types.SimpleNamespace(task_track_started=True))
    assert app.conf.task_track_started is True


def test_non_settings_are_ignored_but_a_near_miss_is_a_typo(pkg: Path) -> None:
    app = Celery("proj")
    app.config_from_object("cfgpkg.celeryconfig")  # os, timedelta, helper(), Conf, a helper var
    with pytest.raises(UnknownSettingError, match=r"'brokr_url'.*did you mean 'broker_url'"):
        app.config_from_object({"brokr_url": "memory://"})
    with pytest.raises(UnknownSettingError, match="did you mean 'CELERY_RESULT_BACKEND'"):
        app.config_from_object({"CELERY_RESULT_BACKEN": "memory://"})
    with pytest.raises(ConfigurationError, match="setting task_default_priority=12"):
        app.config_from_object({"task_default_priority": 12})


def test_code_wins_over_the_config_object_and_a_second_object_replaces_the_first(
        pkg: Path) -> None:
    app = Celery("proj", broker="sqlite:///given.db")
    app.config_from_object("cfgpkg.celeryconfig")
    assert app.conf.broker_url == "sqlite:///given.db"  # the constructor's, as in Celery
    assert app.conf.task_default_queue == "from-module"
    app.conf.task_default_queue = "set-in-code"
    app.config_from_object("cfgpkg.celeryconfig:Conf")
    assert app.conf.task_default_queue == "set-in-code"
    assert app.conf.result_expires == 86400.0  # the module's value went with it
    assert app.conf.is_set("task_acks_late") and not app.conf.is_set("task_track_started")
    del app.conf["task_default_queue"]
    assert app.conf.task_default_queue == "from-class"


def test_config_file_in_the_current_directory(pkg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = pkg / "work"
    workdir.mkdir()
    (workdir / "cwdconfig.py").write_text("task_default_queue = 'cwd'\n")
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(workdir))])
    before = list(sys.path)
    app = Celery("proj")
    app.config_from_object("cwdconfig")
    assert app.conf.task_default_queue == "cwd"
    assert sys.path == before


def test_silent_ignores_only_what_cannot_be_imported(pkg: Path) -> None:
    app = Celery("proj")
    assert app.config_from_object("cfgpkg.nowhere", silent=True) is False
    assert app.config_from_object("cfgpkg.celeryconfig:Nothing", silent=True) is False
    with pytest.raises(ModuleNotFoundError):
        app.config_from_object("cfgpkg.nowhere")
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        app.config_from_object("cfgpkg.celeryconfig:Nothing")
    (pkg / "cfgpkg" / "broken.py").write_text("1 / 0\n")
    with pytest.raises(ZeroDivisionError):
        app.config_from_object("cfgpkg.broken", silent=True)
    with pytest.raises(ConfigurationError, match="only True"):  # never silent
        app.config_from_object({"enable_utc": False}, silent=True)


# -- namespaces (Django) ------------------------------------------------------------------------
def test_namespace_reads_only_prefixed_names_and_strips_the_prefix(pkg: Path) -> None:
    app = Celery("proj")
    app.config_from_object("cfgpkg.settings", namespace="CELERY")
    assert app.conf.broker_url == "memory://"
    assert app.conf.task_always_eager is True
    assert app.conf.task_default_queue == "django"
    assert app.namespace == "CELERY"


def test_namespace_from_the_constructor_and_lower_case(pkg: Path) -> None:
    app = Celery("proj", namespace="CELERY")
    app.config_from_object({"CELERY_TASK_DEFAULT_QUEUE": "upper", "task_default_queue": "no"})
    assert app.conf.task_default_queue == "upper"
    lower = Celery("proj")
    lower.config_from_object({"celery_task_default_queue": "lower", "CELERY_TASK_ACKS_LATE": False},
                             namespace="celery")
    assert lower.conf.task_default_queue == "lower"
    assert lower.conf.task_acks_late is True  # not in the prefix's case: not read


def test_namespace_ignores_old_names_as_celery_does_but_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    app = Celery("proj")
    with caplog.at_level(logging.WARNING, logger="celeriac.config"):
        app.config_from_object({"CELERY_ALWAYS_EAGER": True}, namespace="CELERY")
    assert app.conf.task_always_eager is False
    assert "CELERY_ALWAYS_EAGER is ignored" in caplog.text
    assert "CELERY_TASK_ALWAYS_EAGER" in caplog.text


def test_namespace_typos_and_unsupported_settings() -> None:
    app = Celery("proj")
    with pytest.raises(UnknownSettingError, match="did you mean 'CELERY_TASK_ALWAYS_EAGER'"):
        app.config_from_object({"CELERY_TASK_ALWAYS_EAGR": True}, namespace="CELERY")
    with pytest.raises(ConfigurationError, match=r"^CELERY_MONGODB_BACKEND_SETTINGS \(namespace "
                       r"'CELERY'\): 'mongodb_backend_settings' is a Celery setting.*MongoDB"):
        app.config_from_object({"CELERY_MONGODB_BACKEND_SETTINGS": {}}, namespace="CELERY")


# -- config_from_envvar -------------------------------------------------------------------------
def test_config_from_envvar(pkg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = Celery("proj")
    monkeypatch.delenv("CELERY_CONFIG_MODULE", raising=False)
    assert app.config_from_envvar("CELERY_CONFIG_MODULE", silent=True) is False
    with pytest.raises(ConfigurationError, match="'CELERY_CONFIG_MODULE' is not set"):
        app.config_from_envvar("CELERY_CONFIG_MODULE")
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "cfgpkg.celeryconfig")
    assert app.config_from_envvar("CELERY_CONFIG_MODULE") is True
    assert app.conf.task_default_queue == "from-module"
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "cfgpkg.nowhere")
    assert app.config_from_envvar("CELERY_CONFIG_MODULE", silent=True) is False


# -- Celery's old names and the settings celeriac does not have ---------------------------------
OLD_EXAMPLES = {
    "BROKER_URL": ("broker_url", "memory://"),
    "CELERY_RESULT_BACKEND": ("result_backend", "memory://"),
    "CELERY_TASK_SERIALIZER": ("task_serializer", "json"),
    "CELERY_ALWAYS_EAGER": ("task_always_eager", True),
    "CELERYD_CONCURRENCY": ("worker_concurrency", 7),
    "CELERY_TASK_RESULT_EXPIRES": ("result_expires", 60.0),
    "CELERY_DEFAULT_QUEUE": ("task_default_queue", "old"),
    "CELERY_IMPORTS": ("imports", ["cfgpkg.tasks"]),
}


@pytest.mark.usefixtures("fresh_warnings")
def test_old_names_map_to_new_ones_with_one_warning_each() -> None:
    app = Celery("proj")
    with pytest.warns(DeprecationWarning) as caught:
        app.config_from_object({old: value for old, (_, value) in OLD_EXAMPLES.items()})
    assert sorted(str(w.message).split("'")[1] for w in caught) == sorted(OLD_EXAMPLES)
    assert all(w.filename == __file__ for w in caught), "the warning points at the caller"
    for new, value in OLD_EXAMPLES.values():
        assert app.conf[new] == value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per name and process: no second warning
        app.conf.update(CELERY_DEFAULT_QUEUE="again", BROKER_URL="memory://")
        assert app.conf.CELERY_DEFAULT_QUEUE == "again"
        assert Celery("other", CELERYD_CONCURRENCY=2).conf.worker_concurrency == 2


@pytest.mark.usefixtures("fresh_warnings")
def test_every_old_name_maps_or_says_it_is_unsupported() -> None:
    conf = settings_module.Settings(environ={})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for old, new in OLD_NAMES.items():
            if new in SETTINGS:
                assert settings_module.canonical_name(old) == new
            else:
                with pytest.raises(ConfigurationError, match=f"'{old}' \\(Celery's old name for "
                                   f"'{new}'\\) is a Celery setting that celeriac does not "
                                   "support") as info:
                    conf[old] = "x"
                assert not isinstance(info.value, UnknownSettingError)


def test_every_celery_setting_celeriac_lacks_is_named_not_unknown() -> None:
    app = Celery("proj")
    missing = sorted(CELERY_NAMES - set(SETTINGS))
    assert "mongodb_backend_settings" in missing and "broker_url" not in missing
    for name in missing:
        with pytest.raises(ConfigurationError) as info:
            app.conf.update({name: None})
        assert not isinstance(info.value, UnknownSettingError), name
        assert "is a Celery setting that celeriac does not support" in str(info.value)
        assert "did you mean" not in str(info.value)
    with pytest.raises(ConfigurationError, match="belongs to the MongoDB result backend"):
        Celery("proj", mongodb_backend_settings={})
    with pytest.raises(AttributeError, match="does not support"):
        _ = app.conf.mongodb_backend_settings


def test_a_feature_prefix_matches_only_at_the_start_of_the_name() -> None:
    """``beat_`` names beat's settings, not ``broker_heartbeat_checkrate`` (AMQP)."""
    with pytest.raises(ConfigurationError, match="belongs to beat's remote control"):
        Celery("proj", beat_enable_remote_control=True)
    with pytest.raises(ConfigurationError) as info:
        Celery("proj", broker_heartbeat_checkrate=2)
    assert "belongs to" not in str(info.value)


def test_real_typos_keep_their_hint() -> None:
    app = Celery("proj")
    with pytest.raises(UnknownSettingError, match="did you mean 'task_default_queue'"):
        app.conf.update(task_default_queu="x")
    with pytest.raises(UnknownSettingError, match="did you mean 'CELERY_DEFAULT_QUEUE'"):
        app.conf.update(CELERY_DEFAULT_QUEU="x")
    with pytest.raises(UnknownSettingError, match="did you mean 'task_always_eager'"):
        app.conf.update(TASK_ALWAYS_EAGER=True)


# -- include and imports ----------------------------------------------------------------------
def _write_tasks(pkg: Path, name: str, order_file: Path) -> None:
    (pkg / "cfgpkg" / f"{name}.py").write_text(textwrap.dedent(f"""
        from celeriac import Celery
        import cfgpkg
        app = cfgpkg.APP
        with open({str(order_file)!r}, "a") as f:
            f.write("{name}\\n")

        @app.task
        def {name}_task():
            return "{name}"
    """))


def test_include_and_imports_are_imported_at_finalize(pkg: Path) -> None:
    import cfgpkg

    order = pkg / "order.txt"
    for name in ("first", "second", "third"):
        _write_tasks(pkg, name, order)
    app = Celery("proj", broker="memory://", include=["cfgpkg.third", "cfgpkg.first"])
    app.config_from_object({"imports": ("cfgpkg.first", "cfgpkg.second")})
    cfgpkg.APP = app
    sent: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        sent.append(sender)

    import_modules.connect(receiver)
    try:
        assert "cfgpkg.first.first_task" not in app.tasks
        app.finalize()
        app.finalize()
    finally:
        import_modules.disconnect(receiver)
    assert order.read_text().split() == ["first", "second", "third"]  # imports, then include
    assert {"cfgpkg.first.first_task", "cfgpkg.second.second_task",
            "cfgpkg.third.third_task"} <= set(app.tasks)
    assert sent == [app]
    assert app.tasks["cfgpkg.third.third_task"].apply().get() == "third"


def test_a_missing_include_is_one_line_and_leaves_the_app_unfinalized(pkg: Path) -> None:
    finalized: list[Any] = []
    app = Celery("proj", broker="memory://", include=["cfgpkg.nothere"])
    app.on_after_finalize.connect(lambda sender, **kw: finalized.append(sender), weak=False)
    with pytest.raises(ConfigurationError, match=r"no module named 'cfgpkg.nothere'"):
        app.finalize()
    assert finalized == []
    (pkg / "cfgpkg" / "nothere.py").write_text("")
    app.finalize()
    assert finalized == [app]


def test_include_setting_values_are_checked() -> None:
    assert Celery("proj", include="a.tasks, b.tasks").conf.include == ["a.tasks", "b.tasks"]
    with pytest.raises(ConfigurationError, match="list of module names"):
        Celery("proj", include=[1])
    assert os.environ.get("CELERIAC_INCLUDE") is None  # no environment variable for it


def test_an_import_modules_receiver_that_raises_stops_finalize() -> None:
    app = Celery("proj", broker="memory://")

    def refuse(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("not here")

    import_modules.connect(refuse, sender=app)
    try:
        with pytest.raises(RuntimeError, match="not here"):
            app.finalize()
    finally:
        import_modules.disconnect(refuse, sender=app)
    app.finalize()


def test_common_celery_config_lines_load_with_their_meaning_here() -> None:
    """The lines nearly every Celery config has: accepted where celeriac does exactly that
    (UTC or a zone for crontabs, JSON results), refused with the reason where it would mean
    something else."""
    app = Celery("proj")
    app.config_from_object({"timezone": "UTC", "enable_utc": True, "result_serializer": "json",
                            "result_accept_content": ["json"], "accept_content": ["json"],
                            "task_serializer": "json"})
    assert (app.conf.timezone, app.conf.enable_utc, app.conf.result_serializer) == (
        "UTC", True, "json")
    app.config_from_object({"CELERY_TIMEZONE": "Etc/UTC"}, namespace="CELERY")
    assert app.conf.timezone == "Etc/UTC"
    assert Celery("proj", timezone="Europe/Paris").conf.timezone == "Europe/Paris"
    for name, value, why in [("timezone", "Europe/Nowhere", "unknown time zone"),
                             ("enable_utc", False, "only True"),
                             ("result_serializer", "pickle", "stored as JSON"),
                             ("result_accept_content", ["pickle"], "must contain 'json'")]:
        with pytest.raises(ConfigurationError, match=why):
            Celery("proj", **{name: value})


def test_celery_tuning_knobs_load_and_say_once_that_they_do_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    from celeriac import settings

    settings._KNOBS_WARNED.clear()
    with caplog.at_level("WARNING", logger="celeriac"):
        app = Celery("proj", broker_transport_options={"visibility_timeout": 3600},
                     broker_connection_retry_on_startup=False)  # False: what celeriac does
        app.conf.update(broker_transport_options={"visibility_timeout": 7200})
        app.conf.update(broker_pool_limit=10)  # Celery's default: nothing to say
    assert app.conf.broker_transport_options == {"visibility_timeout": 7200}
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert said[0].startswith("setting broker_transport_options={'visibility_timeout': 3600} is "
                              "accepted for compatibility with Celery but has no effect")
    assert "broker_lease_timeout" in said[0]
