"""``celeriac dashboard``: serve the web dashboard (docs/dashboard.md), and the sidecar
that ``celeriac worker --dashboard`` starts.

Flags follow Flower's where they mean the same (``--address``, ``--port``,
``--certfile``, ``--keyfile``); each defaults to its ``dashboard_*`` setting.
``--hash-password`` prints the hash of a password to put in a setting, and needs no app.

``worker --dashboard`` runs the dashboard as a **sidecar process** (``celeriac
dashboard`` with ``--parent-pid``), not inside the supervisor: the supervisor's loop
(heartbeats, reaping, time limits) never shares a process, a GIL or a crash with web
requests, and the sidecar stops with the worker, or by itself when the worker is gone.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from celeriac.app import Celeriac

log = logging.getLogger("celeriac.dashboard")

#: Seconds a sidecar dashboard gets to stop when its worker stops.
SIDECAR_STOP_TIMEOUT = 5.0


def _hash_password(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--hash-password``: read a password (twice on a terminal, one line from a pipe)
    and print its hash; the app is not loaded."""
    if not value or ctx.resilient_parsing:
        return
    try:
        from werkzeug.security import generate_password_hash
    except ImportError:
        raise click.ClickException(
            "the dashboard needs its extra: pip install 'celeriac[dashboard]'") from None
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("empty password")
    click.echo(generate_password_hash(password))
    ctx.exit(0)


def dashboard_command(app_command: Callable[[Any], Any]) -> click.Command:
    """The ``dashboard`` command, loading its app with the CLI's ``app_command``."""

    @click.command()
    @click.option("--address", metavar="HOST", help="Listen on this address [default: "
                  "dashboard_address, 127.0.0.1]. Another than loopback needs a password.")
    @click.option("--port", type=click.IntRange(0, 65535),
                  help="Listen on this port [default: dashboard_port, 5555; 0: any free one].")
    @click.option("--certfile", metavar="PATH", help="TLS certificate (PEM): serve https.")
    @click.option("--keyfile", metavar="PATH", help="TLS private key (PEM).")
    @click.option("-l", "--loglevel", default="INFO", show_default=True,
                  type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
    @click.option("--hash-password", is_flag=True, is_eager=True, expose_value=False,
                  callback=_hash_password, help="Print the hash of a password and exit.")
    @click.option("--parent-pid", type=int, hidden=True,
                  help="Stop when this process is gone (worker --dashboard).")
    @app_command
    def dashboard(app: Celeriac, address: str | None, port: int | None, certfile: str | None,
                  keyfile: str | None, loglevel: str, parent_pid: int | None) -> None:
        """Serve the web dashboard (needs: pip install 'celeriac[dashboard]')."""
        _require_extra()
        from celeriac.dashboard.server import options_from, serve

        logging.basicConfig(level=loglevel.upper(),
                            format="[%(asctime)s: %(levelname)s/dashboard] %(message)s")
        options = options_from(app, address=address, port=port, certfile=certfile,
                               keyfile=keyfile, parent_pid=parent_pid)
        serve(app, options)

    return dashboard


def _require_extra() -> None:
    try:
        import flask  # noqa: F401
        import gevent  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "the dashboard needs its extra: pip install 'celeriac[dashboard]'") from None


def start_sidecar(app: Celeriac, app_spec: str) -> subprocess.Popen[bytes]:
    """``worker --dashboard``: check the address and credentials here (a refusal stops the
    worker's start), then start ``celeriac dashboard`` beside the supervisor."""
    _require_extra()
    from celeriac.dashboard.server import check_start, options_from

    check_start(app, options_from(app))
    argv = [sys.executable, "-m", "celeriac", "-A", app_spec, "dashboard",
            "--parent-pid", str(os.getpid())]
    log.info("starting the dashboard beside this worker (pid %d)", os.getpid())
    return subprocess.Popen(argv)


def stop_sidecar(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(SIDECAR_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
