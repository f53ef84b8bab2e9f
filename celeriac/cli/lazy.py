"""Subcommands imported when they are used: what ``celeriac worker`` does not need, it
does not load.

Every ``celeriac`` command starts an interpreter, and the worker's stays for the
whole life of the node as its supervisor. Importing every subcommand's module up front
(beat and its schedules, the dashboard, events, the report command's package metadata,
rich) cost each command about 50 ms and the supervisor about 5 MB of resident memory
(``python -c 'import celeriac.cli.main'`` against the app and the supervisor alone,
2026-12-05). So a :class:`LazyGroup` knows its subcommands by name and imports one
only when it is run, or when ``celeriac --help`` lists them all with their help.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click

#: A subcommand's module and the factory there that makes it, given the decorator that
#: loads the ``-A`` app; a factory may make several commands (``control`` and
#: ``inspect``), each registered under its own name.
LazySpec = tuple[str, str]


class LazyGroup(click.Group):
    """A :class:`click.Group` whose ``lazy`` subcommands are made on first use.

    ``app_command`` is the decorator each factory receives (``celeriac.cli.main``'s:
    it loads the ``-A`` app and passes it first). A factory that makes several
    commands is called once; all of them are registered then.
    """

    def __init__(self, *args: Any, lazy: dict[str, LazySpec] | None = None,
                 app_command: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.app_command = app_command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self._load(self.lazy[cmd_name])
        return super().get_command(ctx, cmd_name)

    def _load(self, spec: LazySpec) -> None:
        module_name, factory_name = spec
        factory = getattr(importlib.import_module(module_name), factory_name)
        made = factory(self.app_command)
        for command in made if isinstance(made, list | tuple) else [made]:
            if command.name not in self.lazy:
                raise RuntimeError(f"{module_name}.{factory_name} made {command.name!r}, "
                                   "which the group does not list")
            self.add_command(command)
