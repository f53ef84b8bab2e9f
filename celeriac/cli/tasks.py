"""``celeriac tasks``: search the result backend's task index from the command line.

The same search the dashboard's Tasks page uses (:meth:`ResultBackend.search
<celeriac.backends.base.ResultBackend.search>`): by name, state and id prefix, newest
first, one page at a time, with the total of matches.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from celeriac.backends.search import MAX_LIMIT
from celeriac.cli.events import AppCommand

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def _when(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


def tasks_command(app_command: AppCommand) -> click.Command:
    """The ``tasks`` command; ``app_command`` loads the ``-A`` app (``celeriac.cli.main``)."""

    @click.command("tasks")
    @click.option("--name", help="Only tasks of this name (exact).")
    @click.option("--state", help="Only tasks in this state (SUCCESS, FAILURE, STARTED...).")
    @click.option("--id", "task_id_prefix", metavar="PREFIX", help="Only task ids starting so.")
    @click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(0, MAX_LIMIT))
    @click.option("--json", "as_json", is_flag=True,
                  help="Print {\"total\": n, \"tasks\": [...]} as JSON.")
    @app_command
    def tasks(app: Celeriac, name: str | None, state: str | None, task_id_prefix: str | None,
              offset: int, limit: int, as_json: bool) -> None:
        """Stored task results matching the filters, newest first, and how many match."""
        found, total = app.backend.search(task_id_prefix=task_id_prefix, name=name,
                                          state=state,
                                          offset=offset, limit=limit)
        if as_json:
            click.echo(json.dumps({"total": total, "offset": offset, "tasks": [
                {"task_id": t.task_id, "task": t.task, "state": t.state,
                 "date_done": t.date_done, "queue": t.queue, "worker": t.worker}
                for t in found]}))
            return
        table = Table("task id", "name", "state", "done", "worker", box=None)
        for t in found:
            table.add_row(t.task_id, t.task or "", t.state, _when(t.date_done), t.worker or "")
        console = Console()
        console.print(table)
        shown = f"{offset + 1}-{offset + len(found)}" if found else "none"
        console.print(f"{shown} of {total}")

    return tasks
