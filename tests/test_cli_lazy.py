"""``celeriac``'s subcommands in modules of their own are imported when used
(``celeriac.cli.lazy``): the worker's supervisor, which is the CLI process, never
loads beat, the dashboard, the events view or rich."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from celeriac.cli.lazy import LazyGroup
from celeriac.cli.main import LAZY_COMMANDS, cli

#: Modules only some subcommands need.
NOT_FOR_THE_WORKER = ("celeriac.cli.beat", "celeriac.beat.service", "celeriac.beat.entries",
                      "celeriac.schedules", "celeriac.cli.dashboard",
                      "celeriac.cli.events", "celeriac.cli.control", "celeriac.cli.report",
                      "celeriac.cli.queues", "celeriac.cli.metrics", "celeriac.cli.tasks",
                      "rich")


def loaded_after(code: str) -> set[str]:
    """The modules of ``NOT_FOR_THE_WORKER`` imported once ``code`` has run, in a fresh
    interpreter (this one has imported them all by now)."""
    probe = (f"import sys, json\n{code}\n"
             f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'rich' "
             f"or m in {NOT_FOR_THE_WORKER!r})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_cli_and_the_worker_command_import_none_of_the_other_commands() -> None:
    code = ("from celeriac.cli.main import cli\n"
            "import click\n"
            "cli.get_command(click.Context(cli), 'worker')\n"
            "import celeriac.worker.supervisor")
    assert loaded_after(code) == set()


def test_a_lazy_command_is_imported_when_it_is_used() -> None:
    code = ("from celeriac.cli.main import cli\n"
            "import click\n"
            "cli.get_command(click.Context(cli), 'beat')")
    loaded = loaded_after(code)
    assert "celeriac.cli.beat" in loaded and "celeriac.cli.dashboard" not in loaded


@pytest.mark.parametrize("name", sorted(LAZY_COMMANDS))
def test_every_lazy_command_resolves_to_itself(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.name == name


def test_help_lists_every_command_with_its_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1]
    for name in [*LAZY_COMMANDS, "worker", "call", "result", "status", "purge"]:
        assert f"\n  {name} " in listed, name
    assert "Ask the workers" in listed  # inspect's help, from its own module


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["nope"])
    assert result.exit_code == 2 and "No such command 'nope'" in result.output


def test_a_factory_making_a_command_the_group_does_not_list_is_an_error() -> None:
    """A command added to a factory but not to ``LAZY_COMMANDS`` would never be found by
    name; loading its module says so rather than registering it silently."""
    group = LazyGroup(lazy={"inspect": ("celeriac.cli.control", "control_commands")},
                      app_command=lambda fn: fn)
    with pytest.raises(RuntimeError, match="made 'control'"):
        group.get_command(click.Context(group), "inspect")
