from __future__ import annotations

import pytest

from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.settings import SETTINGS, Settings


def test_defaults_come_from_the_registry() -> None:
    conf = Settings(environ={})
    assert conf.broker_url == "sqlite:///celeriac.db"
    assert conf["task_default_queue"] == "celery"
    assert conf.task_acks_late is True


def test_environment_overrides_defaults_and_code_overrides_environment() -> None:
    conf = Settings(environ={"CELERIAC_BROKER_URL": "sqlite:///env.db"})
    assert conf.broker_url == "sqlite:///env.db"
    conf.update(broker_url="sqlite:///code.db")
    assert conf.broker_url == "sqlite:///code.db"


def test_misspelt_setting_is_an_error_with_a_hint() -> None:
    conf = Settings(environ={})
    with pytest.raises(UnknownSettingError, match="did you mean 'task_default_queue'"):
        conf.update(task_default_queu="x")
    with pytest.raises(AttributeError, match="task_acks_late"):
        _ = conf.task_acks_lat


def test_values_are_validated_and_normalised() -> None:
    conf = Settings(environ={"CELERIAC_BROKER_LEASE_TIMEOUT": "12"})
    assert conf.broker_lease_timeout == 12.0
    conf["task_acks_late"] = "false"
    assert conf.task_acks_late is False
    conf["accept_content"] = "json,pickle"
    assert conf.accept_content == ["json", "pickle"]
    with pytest.raises(ConfigurationError, match="task_default_priority"):
        conf["task_default_priority"] = 12
    with pytest.raises(ConfigurationError, match="worker_concurrency"):
        conf["worker_concurrency"] = 0


def test_every_setting_is_documented_and_its_default_valid() -> None:
    for setting in SETTINGS.values():
        assert setting.doc.strip(), setting.name
        if setting.default is not None:
            assert setting.validator(setting.default) == setting.default, setting.name


def test_settings_doc_is_generated_from_the_registry() -> None:
    from pathlib import Path

    from celeriac.settings import markdown

    doc = Path(__file__).parent.parent / "docs" / "settings.md"
    assert doc.read_text() == markdown(), "regenerate docs/settings.md (see its first lines)"


def test_attribute_assignment_is_checked_too() -> None:
    conf = Settings(environ={})
    conf.task_default_queue = "other"
    assert conf["task_default_queue"] == "other"
    with pytest.raises(UnknownSettingError):
        conf.task_default_queu = "x"
