"""The table of Celery's surface in docs/migrating.md against the data file, Celery and the code.

Three checks, so that the table cannot drift from what celeriac does:

- the doc's table is exactly what ``scripts/migrating_table.py`` renders from
  ``docs/celery-surface.csv``;
- the CSV has a row for every name of Celery's (``tests/celery_names.txt`` and
  ``CELERY_NAMES``, both generated from Celery itself), and none Celery lacks;
- every row's status matches the code, both ways: a row that "works" or "differs" names
  something celeriac accepts (a setting the registry takes, a task option, a flag
  ``celeriac worker`` runs with, an importable path, a signal that exists), and an
  "unsupported" row names something celeriac refuses or lacks.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
from click.testing import CliRunner

import celeriac.exceptions
import celeriac.signals
import celeriac.states
from celeriac import Celeriac
from celeriac.celery_settings import CELERY_NAMES
from celeriac.cli.main import cli
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.result import AsyncResult
from celeriac.settings import Settings
from celeriac.task import SEND_OPTIONS, check_send_options
from celeriac.task_options import OPTION_NAMES

ROOT = Path(__file__).resolve().parent.parent
NAMES = Path(__file__).with_name("celery_names.txt")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migrating_table", ROOT / "scripts" / "migrating_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


table = _script()


def celery_names() -> dict[tuple[str, str], tuple[list[str], str]]:
    """(kind, name) -> (option strings, "flag"/"value"/"") from tests/celery_names.txt."""
    out: dict[tuple[str, str], tuple[list[str], str]] = {}
    for line in NAMES.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, name, aliases, takes = line.split("\t")
            out[(kind, name)] = (aliases.split(), takes)
    return out


# -- what the code accepts, per kind of row ------------------------------------------------
class Neither(AssertionError):
    """The code neither accepts nor refuses the name (it would be silently ignored)."""


def setting_accepted(name: str) -> bool:
    try:
        Settings(environ={})[name]
    except UnknownSettingError:
        raise Neither(f"{name!r} is not even known as a Celery setting") from None
    except ConfigurationError as exc:
        assert "Celery setting that celeriac does not support" in str(exc)
        return False
    return True


def task_option_accepted(name: str) -> bool:
    if name in OPTION_NAMES:
        return True
    app = Celeriac("surface", broker="memory://", backend="memory://", set_as_current=False)
    options: dict[str, Any] = {name: None}
    try:
        app.task(**options)
    except ConfigurationError as exc:
        if "Celery task option celeriac does not support" in str(exc):
            return False
        raise Neither(f"task option {name!r}: refused, but not as a Celery option: {exc}") from None
    raise Neither(f"task option {name!r} becomes a custom attribute without meaning: refuse it "
                  "(task_options.UNSUPPORTED) or support it")


def send_option_accepted(name: str) -> bool:
    """Accepted: a :class:`SendOptions` key that ``check_send_options`` lets through.
    Refused: ``check_send_options`` raises for it with a reason, not just "unknown"."""
    try:
        check_send_options({name: None})
    except UnknownSettingError as exc:
        if "is not supported" not in str(exc):
            raise Neither(f"send option {name!r} is refused as unknown, without a reason: "
                          "add it to send_options.REFUSED or support it") from None
        assert name not in SEND_OPTIONS
        return False
    assert name in SEND_OPTIONS
    return True


def _options(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def _known(command: click.Command, aliases: list[str], what: str) -> bool:
    known = [alias in _options(command) for alias in aliases]
    if any(known) and not all(known):
        missing = [a for a, k in zip(aliases, known, strict=True) if not k]
        raise Neither(f"{what}: some of Celery's spellings are missing: {', '.join(missing)}")
    return all(known)


#: A valid value for each Celery worker flag that takes one (the rest take "1").
SAMPLES = {"--hostname": "w1@%h", "--loglevel": "INFO", "--optimization": "fair", "--pool": "solo",
           "--queues": "q1", "--exclude-queues": "q2", "--include": "tasks", "--autoscale": "4,2",
           "--pool-start-method": "spawn", "--statedb": "worker.db", "--logfile": "w.log",
           "--pidfile": "w.pid", "--schedule-filename": "beat.db", "--scheduler": "x:Y",
           "--umask": "022", "--executable": sys.executable}


class GuardTripped(RuntimeError):
    """A flag tried to fork, detach or change the test process (so it was acted on)."""


@pytest.fixture
def guarded() -> Iterator[None]:
    """``celeriac worker`` is run in this process below, up to the point where it would
    need a shared broker: should a flag ever fork, detach or change the process's user,
    directory or umask before that, it raises here instead of doing it to pytest."""
    saved = {name: getattr(os, name) for name in
             ("fork", "setsid", "setuid", "setgid", "chdir", "umask") if hasattr(os, name)}

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise GuardTripped("the surface test does not let a flag change the test process")

    for name in saved:
        setattr(os, name, refuse)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(os, name, value)


def worker_flag_accepted(name: str, aliases: list[str], takes: str) -> bool:
    """Accepted: click knows every spelling, and ``celeriac worker`` runs with it past its
    checks (to the error a memory:// broker gets, or to the guard when it acts on the flag
    before that). Refused: click does not know it, or the command stops with a usage
    error (``-B``)."""
    worker = cli.commands["worker"]
    if not _known(worker, aliases, f"worker flag {name}"):
        return False
    app = Celeriac("surface", broker="memory://", backend="memory://", set_as_current=False)
    args = ["worker", name] + ([] if takes == "flag" else [SAMPLES.get(name, "1")])
    result = CliRunner().invoke(cli, args, obj={"app": app, "app_from_spec": False})
    assert "Invalid value" not in result.output, f"fix the sample value of {name}: {result.output}"
    if result.exit_code == 2:
        return False
    tripped = isinstance(result.exception, GuardTripped)
    assert tripped or "lives inside one process" in result.output, (name, result.output,
                                                                    result.exception)
    return True


def import_accepted(path: str) -> bool:
    """``celery.a.b`` as ``celeriac.a.b``: a module, or an attribute of one."""
    target = "celeriac" + path.removeprefix("celery")
    try:
        importlib.import_module(target)
        return True
    except ModuleNotFoundError as exc:
        if exc.name is None or not target.startswith(exc.name):
            raise  # a module that exists failed to import: a bug, not an absence
    module, _, attribute = target.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as exc:
        if exc.name is None or not target.startswith(exc.name):
            raise
        return False


def _async_result_names() -> set[str]:
    app = Celeriac("surface", broker="memory://", backend="memory://", set_as_current=False)
    return set(dir(AsyncResult("an-id", app=app)))


def checkers() -> dict[str, Callable[[str], bool]]:
    flags = celery_names()
    return {
        "setting": setting_accepted,
        "task option": task_option_accepted,
        "send option": send_option_accepted,
        "worker flag": lambda name: worker_flag_accepted(name, *flags[("worker flag", name)]),
        "celery option": lambda name: _known(cli, flags[("celery option", name)][0],
                                             f"celery option {name}"),
        "command": lambda name: name in cli.list_commands(click.Context(cli)),
        "import": import_accepted,
        "AsyncResult": lambda name: name in _async_result_names(),
        "exception": lambda name: hasattr(celeriac.exceptions, name),
        "state": lambda name: hasattr(celeriac.states, name),
        "signal": lambda name: hasattr(celeriac.signals, name),
    }


def mismatches(rows: list[Any]) -> list[str]:
    """Every row whose status the code contradicts, as a line saying what to change."""
    check = checkers()
    out = []
    for row in rows:
        try:
            accepted = check[row.kind](row.name)
        except Neither as exc:
            out.append(f"{row.kind} {row.name}: {exc}")
            continue
        if accepted != (row.status != "unsupported"):
            should = "works or differs" if accepted else "unsupported"
            out.append(f"{row.kind} {row.name}: the CSV says {row.status}, the code says {should}")
    return out


# -- the tests ------------------------------------------------------------------------------
def test_doc_table_is_generated_from_the_csv() -> None:
    doc = table.DOC.read_text()
    assert table.updated(doc, table.load()) == doc, (
        "docs/migrating.md is stale: run .venv/bin/python scripts/migrating_table.py")


def test_csv_lists_every_celery_name_and_only_those() -> None:
    rows = {(r.kind, r.name) for r in table.load() if r.kind != "import"}
    celery = set(celery_names()) | {("setting", name) for name in CELERY_NAMES}
    assert sorted(celery - rows) == [], "names of Celery's without a row in docs/celery-surface.csv"
    assert sorted(rows - celery) == [], "rows for names Celery does not have"


@pytest.mark.usefixtures("guarded")
def test_every_status_matches_the_code() -> None:
    assert mismatches(table.load()) == []


@pytest.mark.usefixtures("guarded")
@pytest.mark.parametrize("kind", list(table.KINDS))
def test_a_wrong_status_is_caught_for_every_kind(kind: str) -> None:
    """The check can fail: flipping one row of each status, of each kind, is reported."""
    rows = [r for r in table.load() if r.kind == kind]
    supported = next(r for r in rows if r.status != "unsupported")
    refused = next(r for r in rows if r.status == "unsupported")
    flipped = [table.Row(supported.kind, supported.name, "unsupported", "", ""),
               table.Row(refused.kind, refused.name, "works", "", "")]
    assert len(mismatches(flipped)) == 2


def test_a_malformed_row_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "surface.csv"
    data.write_text("kind,name,status,planned,note\nsetting,beat_schedule,works,issue 11,\n")
    with pytest.raises(table.DataError, match="nothing planned"):
        table.load(data)
    data.write_text("kind,name,status,planned,note\nsetting,broker_url,fine,,\n")
    with pytest.raises(table.DataError, match="status must be"):
        table.load(data)
