"""``celeriac inspect`` and ``celeriac control``: Celery's remote-control commands.

::

    celeriac -A tasks inspect ping|active|reserved|query_task ID...|scheduled|stats|report
                            |registered|revoked|active_queues|conf
    celeriac -A tasks control revoke ID... | terminate SIGNAL ID... | shutdown
                             | rate_limit TASK RATE | time_limit TASK SOFT [HARD]
                             | add_consumer QUEUE | cancel_consumer QUEUE | pool_grow [N] | pool_shrink [N]
                             | autoscale [MAX [MIN]]

Both take ``-d/--destination`` (a comma list of node names; default every
node), ``-t/--timeout`` (seconds to wait for replies, 1 by default) and
``-j/--json``. Arguments come in Celery's order. The readable output names each
node that answered (``-> w1@host: OK pong``) and then how many did; a
destination that did not answer is named on stderr (``no reply from ...``).
When no node answers at all the command fails as Celery's does: ``Error: No
nodes replied within time constraint``, exit status 69 (EX_UNAVAILABLE). A
``control`` command that every node answering refused exits with status 1.
``revoke`` and ``terminate`` are stored in the broker for every worker (none
replies), so they print what was revoked and exit 0.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from celeriac.control import CONTROL_COMMANDS, INSPECT_COMMANDS, flatten

if TYPE_CHECKING:
    from celeriac.app import Celeriac

F = TypeVar("F", bound=Callable[..., Any])

#: Celery's exit status when no node replied (``EX_UNAVAILABLE``).
EX_UNAVAILABLE = 69


class NoReply(click.ClickException):
    """No node answered within the timeout."""

    exit_code = EX_UNAVAILABLE


def _none_or_float(text: str) -> float | None:
    return None if text.lower() in {"none", "null"} else float(text)


def _bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return text.lower() in {"1", "true", "yes", "on"}
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Usage:
    """The arguments of one command: named ones in order (the first ``required`` of them
    required), then optionally any number more (``variadic``)."""

    signature: str = ""
    args: tuple[tuple[str, Callable[[str], Any]], ...] = ()
    required: int = 0
    variadic: str | None = None
    #: How many more are accepted and dropped (Celery's exchange options of add_consumer).
    ignored: int = 0

    def parse(self, command: str, values: Sequence[str]) -> dict[str, Any]:
        count = len(values)
        most = len(self.args) + self.ignored
        if count < self.required or (self.variadic is None and count > most):
            raise click.UsageError(f"{command} takes {self.signature or 'no arguments'}")
        parsed: dict[str, Any] = {}
        for (name, convert), value in zip(self.args, values, strict=False):
            try:
                parsed[name] = convert(value)
            except ValueError:
                raise click.UsageError(f"{command}: {name} {value!r} is not valid (usage: "
                                       f"{command} {self.signature})") from None
        if self.variadic is not None:
            parsed[self.variadic] = list(values[len(self.args):])
        return parsed


INSPECT_USAGE: dict[str, Usage] = {
    "registered": Usage("[ATTR...]", variadic="taskinfoitems"),
    "query_task": Usage("TASK_ID...", required=1, variadic="ids"),
    "conf": Usage("[WITH_DEFAULTS]", (("with_defaults", _bool),)),
}
CONTROL_USAGE: dict[str, Usage] = {
    "revoke": Usage("TASK_ID...", required=1, variadic="task_id"),
    "terminate": Usage("SIGNAL TASK_ID...", (("signal", str),), required=2, variadic="task_id"),
    "rate_limit": Usage("TASK_NAME RATE_LIMIT", (("task_name", str), ("rate_limit", str)),
                        required=2),
    "time_limit": Usage("TASK_NAME SOFT [HARD]", (("task_name", str), ("soft", _none_or_float),
                                                   ("hard", _none_or_float)), required=2),
    "add_consumer": Usage("QUEUE [EXCHANGE [TYPE [ROUTING_KEY]]]", (("queue", str),),
                          required=1, ignored=3),
    "cancel_consumer": Usage("QUEUE", (("queue", str),), required=1),
    "pool_grow": Usage("[N]", (("n", int),)),
    "pool_shrink": Usage("[N]", (("n", int),)),
    "autoscale": Usage("[MAX [MIN]]", (("max", int), ("min", int))),
}


def _nodes(destination: str | None) -> list[str] | None:
    """``-d w1@a,w2@b`` as a list of node names; None (every node) when not given."""
    names = [n.strip() for n in (destination or "").split(",") if n.strip()]
    return names or None


def _remote_options(fn: F) -> F:
    fn = click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    fn = click.option("-t", "--timeout", default=1.0, show_default=True,
                      type=click.FloatRange(min=0, min_open=True),
                      help="Seconds to wait for replies.")(fn)
    return click.option("-d", "--destination", metavar="NODE[,NODE...]",
                        help="Only these nodes [default: every node].")(fn)


def _item(item: Any) -> str:
    """One element of a list reply, on one line."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and "id" in item and "name" in item:
        return (f"{item['name']}[{item['id']}] args={item.get('args')} "
                f"kwargs={item.get('kwargs')} pid={item.get('worker_pid')}")
    if isinstance(item, dict) and "name" in item:
        served = item.get("pools")
        return f"{item['name']}" + (f" ({', '.join(served)})" if served else "")
    return json.dumps(item, default=str)


def _lines(node: str, reply: Any) -> list[str]:
    """A node's reply as Celery's CLI shows one: ``-> node: OK ...`` and its details."""
    head = f"-> {node}: "
    if isinstance(reply, dict) and set(reply) == {"ok"}:
        return [f"{head}OK {reply['ok']}"]
    if isinstance(reply, dict) and set(reply) == {"error"}:
        return [f"{head}ERROR {reply['error']}"]
    if isinstance(reply, list):
        return [f"{head}OK", *(f"    * {_item(item)}" for item in reply)] if reply else \
            [f"{head}OK", "    - empty -"]
    shown = json.dumps(reply, indent=2, sort_keys=True, default=str)
    return [f"{head}OK", *(f"    {line}" for line in shown.splitlines())]


def _report(replies: list[dict[str, Any]], nodes: list[str] | None, timeout: float) -> None:
    answered = set(flatten(replies))
    for node in nodes or ():
        if node not in answered:
            click.echo(f"no reply from {node} within {timeout:g}s", err=True)
    if not replies:
        raise NoReply("No nodes replied within time constraint")


def _show(replies: list[dict[str, Any]]) -> None:
    for reply in replies:
        for node, body in reply.items():
            for line in _lines(node, body):
                click.echo(line)
    count = len(flatten(replies))
    click.echo(f"\n{count} {'node' if count == 1 else 'nodes'} online.")


def _scheduled_note(app: Celeriac) -> None:
    waiting = sum(stats.scheduled for stats in app.broker.stats().values())
    click.echo(f"(celeriac workers never hold ETA or countdown tasks: {waiting} wait in the "
               "broker until due; 'celeriac status' counts them per queue)")


def _revoke(app: Celeriac, command: str, arguments: dict[str, Any], nodes: list[str] | None,
            as_json: bool) -> None:
    ids: list[str] = arguments["task_id"]
    terminate = command == "terminate"
    signal = arguments.get("signal") or "SIGTERM"
    app.control.revoke(ids, terminate=terminate, signal=signal)
    if nodes:
        click.echo("note: a revocation is kept in the broker for every worker; "
                   "--destination does not narrow it", err=True)
    if as_json:
        click.echo(json.dumps({"revoked": ids, "terminate": terminate, "signal": signal}))
        return
    how = f" (terminate with {signal})" if terminate else ""
    click.echo(f"tasks {', '.join(ids)} flagged as revoked{how}: every worker reads "
               "revocations from the broker within a second")


def control_commands(app_command: Callable[[Callable[..., Any]], Callable[..., Any]]
                     ) -> list[click.Command]:
    """The ``inspect`` and ``control`` commands, loading the app with ``app_command``."""

    @click.command("inspect")
    @click.argument("command", type=click.Choice(INSPECT_COMMANDS))
    @click.argument("args", nargs=-1)
    @_remote_options
    @app_command
    def inspect(app: Celeriac, command: str, args: tuple[str, ...], destination: str | None,
                timeout: float, as_json: bool) -> None:
        """Ask the workers: COMMAND is ping, active, reserved, query_task TASK_ID...,
        scheduled, stats, report, registered [ATTR...], revoked, active_queues or conf
        [WITH_DEFAULTS]."""
        arguments = INSPECT_USAGE.get(command, Usage()).parse(command, args)
        nodes = _nodes(destination)
        replies = app.control.broadcast(command, arguments, destination=nodes, reply=True,
                                        timeout=timeout) or []
        _report(replies, nodes, timeout)
        if as_json:
            click.echo(json.dumps(flatten(replies), default=str))
            return
        _show(replies)
        if command == "scheduled":
            _scheduled_note(app)

    @click.command("control")
    @click.argument("command", type=click.Choice(CONTROL_COMMANDS))
    @click.argument("args", nargs=-1)
    @_remote_options
    @app_command
    def control(app: Celeriac, command: str, args: tuple[str, ...], destination: str | None,
                timeout: float, as_json: bool) -> None:
        """Tell the workers: COMMAND is revoke ID..., terminate SIGNAL ID..., shutdown,
        rate_limit TASK RATE, time_limit TASK SOFT [HARD], add_consumer QUEUE,
        cancel_consumer QUEUE, pool_grow [N], pool_shrink [N] or autoscale [MAX [MIN]]."""
        arguments = CONTROL_USAGE.get(command, Usage()).parse(command, args)
        nodes = _nodes(destination)
        if command in ("revoke", "terminate"):
            _revoke(app, command, arguments, nodes, as_json)
            return
        replies = app.control.broadcast(command, arguments, destination=nodes, reply=True,
                                        timeout=timeout) or []
        if command == "rate_limit":
            click.echo("note: the rate limit is stored in the broker, for every worker (also "
                       "those started later); --destination only narrows who answers", err=True)
        _report(replies, nodes, timeout)
        if as_json:
            click.echo(json.dumps(replies, default=str))
        else:
            _show(replies)
        bodies = list(flatten(replies).values())
        if all(isinstance(body, dict) and "error" in body for body in bodies):
            sys.exit(1)

    return [inspect, control]
