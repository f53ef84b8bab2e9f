"""``celeriac queue pause|resume|paused`` and ``celeriac dead``: list, requeue or delete
dead letters.

Celery and Flower have no queue pause (Celery's nearest is ``control cancel_consumer``,
which changes what nodes consume rather than the queue itself); the verbs follow
Sidekiq's "pause a queue". A paused queue keeps taking messages; workers stop fetching
from it within about a second (``Broker.pause``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def _confirm(question: str, force: bool) -> None:
    if force:
        return
    if not sys.stdin.isatty():
        raise click.UsageError("not a terminal, so cannot ask: pass -f")
    if not click.confirm(question):
        raise SystemExit(1)


def queue_commands(app_command: Callable[[Callable[..., Any]], Callable[..., Any]]
                   ) -> list[click.Command]:
    """The ``queue`` group and the ``dead`` command, loading the app with ``app_command``."""

    @click.group("queue")
    def queue() -> None:
        """Pause or resume a queue (it keeps taking messages; workers stop fetching)."""

    @queue.command("pause")
    @click.argument("name")
    @app_command
    def pause(app: Celeriac, name: str) -> None:
        """Stop workers fetching from queue NAME (within about a second)."""
        app.broker.pause(name)
        click.echo(f"paused {name}: workers stop fetching from it; it keeps taking messages")

    @queue.command("resume")
    @click.argument("name")
    @app_command
    def resume(app: Celeriac, name: str) -> None:
        """Let workers fetch from queue NAME again."""
        app.broker.resume(name)
        click.echo(f"resumed {name}")

    @queue.command("paused")
    @app_command
    def paused(app: Celeriac) -> None:
        """List the paused queues, one per line."""
        for name in sorted(app.broker.paused()):
            click.echo(name)

    @click.command("dead")
    @click.option("-Q", "--queue", "name", help="Only this queue (needed to requeue or delete).")
    @click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
    @click.option("--requeue", is_flag=True, help="Run them again (ready now, deliveries reset).")
    @click.option("--delete", is_flag=True, help="Delete them.")
    @click.option("--id", "ids", multiple=True,
                  help="Only this message id (as listed); repeatable [default: all of the queue].")
    @click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
    @app_command
    def dead(app: Celeriac, name: str | None, limit: int, requeue: bool, delete: bool,
             ids: tuple[str, ...], force: bool) -> None:
        """List dead letters (messages that could not be processed) with their reasons;
        or requeue or delete them (``-Q QUEUE --requeue|--delete [--id ID ...]``)."""
        if requeue or delete:
            if requeue and delete:
                raise click.UsageError("--requeue or --delete, not both")
            if not name:
                raise click.UsageError("-Q QUEUE is needed to requeue or delete dead letters")
            which = f"{len(ids)} dead letter(s)" if ids else "ALL dead letters"
            verb = "Requeue" if requeue else "Delete"
            _confirm(f"{verb} {which} of {name}?", force or bool(ids))
            chosen = list(ids) if ids else None
            if requeue:
                done = app.broker.requeue_dead(name, chosen)
            else:
                done = app.broker.delete_messages(name, "dead", chosen)
            click.echo(f"{'requeued' if requeue else 'deleted'} {done} dead letter(s) of {name}")
            return
        from celeriac.message import peek_task_id

        for letter in app.broker.dead_letters(name, limit):
            task, task_id = peek_task_id(letter.body)
            click.echo(json.dumps({"queue": letter.queue, "task": task, "id": task_id,
                                   "message_id": letter.id, "reason": letter.reason,
                                   "deliveries": letter.delivery_count,
                                   "failed_at": letter.failed_at}))

    return [queue, dead]
