"""``celeriac report`` and ``celeriac shell``: Celery's two small helper commands.

``report`` prints what a bug report needs -- celeriac's, Python's and the
platform's versions, the broker and result-backend client libraries, and the
app's settings -- with secrets masked as ``inspect conf`` masks them
(:mod:`celeriac.masking`): people paste it into issues. It does not connect to
the broker, so it also works when the broker is what is broken.

``shell`` starts an interactive Python with the app as ``app``, ``celery`` and
``celeriac``, celeriac's public names, and each of the app's tasks under its
short name: IPython if installed, else bpython, else the standard
``code.interact`` (``--python`` forces it, ``-I``/``-B`` force the others).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
import sqlite3
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from celeriac import __version__
from celeriac.masking import mask_settings

if TYPE_CHECKING:
    from celeriac.app import Celeriac

#: Libraries a report lists when installed: clients of brokers and backends, and pools.
LIBRARIES = ("click", "orjson", "psutil", "redis", "hiredis", "gevent", "eventlet", "greenlet")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def report_text(app: Celeriac, *, with_defaults: bool = False) -> str:
    """The text of ``celeriac report``: versions, then settings (masked)."""
    conf = app.conf
    installed = [f"{name}:{version}" for name in LIBRARIES
                 if (version := _version(name)) is not None]
    masked = mask_settings({name: conf[name] for name in conf
                            if with_defaults or conf.is_set(name)})
    lines = [
        f"software -> celeriac:{__version__} py:{platform.python_version()}",
        f"            {' '.join(installed)}",
        f"            sqlite:{sqlite3.sqlite_version}",
        f"platform -> system:{platform.system()} "
        f"arch:{', '.join(part for part in platform.architecture() if part)} "
        f"kernel version:{platform.release()} imp:{platform.python_implementation()}",
        f"app      -> {app.main or '__main__'} tasks:{len(app.tasks)}",
        f"broker   -> {mask_settings({'url': conf.broker_url})['url']}",
        f"results  -> {mask_settings({'url': conf.result_backend})['url']}",
        "",
        "settings (all):" if with_defaults else "settings (set in code or the environment; "
                                                "--all for every setting):",
    ]
    lines += [f"{name}: {value!r}" for name, value in masked.items()]
    return "\n".join(lines)


def shell_namespace(app: Celeriac, *, with_tasks: bool = True) -> dict[str, Any]:
    """What ``celeriac shell`` starts with: the app under Celery's names and celeriac's, the
    public API, and each task by its short name (``tasks.add`` is ``add``). Two tasks with
    the same short name are left out (use ``app.tasks[name]``), rather than one hiding the
    other."""
    import celeriac

    namespace: dict[str, Any] = {name: getattr(celeriac, name) for name in celeriac.__all__
                                 if not name.startswith("_")}
    namespace.update(app=app, celery=app, celeriac=app)
    if with_tasks:
        app.finalize()
        short: dict[str, list[Any]] = {}
        for name, task in sorted(app.tasks.items()):
            if not name.startswith(("celeriac.", "celery.")):
                short.setdefault(name.rpartition(".")[2], []).append(task)
        namespace.update({name: tasks[0] for name, tasks in short.items()
                          if len(tasks) == 1 and name.isidentifier()})
    return namespace


def _plain(namespace: dict[str, Any], banner: str) -> None:
    import code

    try:
        import readline
        import rlcompleter
    except ImportError:  # no readline on this platform: no completion
        pass
    else:
        readline.set_completer(rlcompleter.Completer(namespace).complete)
        readline.parse_and_bind("tab:complete")
    code.interact(banner=banner, local=namespace, exitmsg="")


# IPython and bpython are optional and untyped: imported by name, called as Any.
def _ipython(namespace: dict[str, Any], banner: str) -> None:
    importlib.import_module("IPython").start_ipython(argv=[], user_ns=namespace)


def _bpython(namespace: dict[str, Any], banner: str) -> None:
    importlib.import_module("bpython").embed(namespace, banner=banner)


#: Shell name -> (module that must be importable, how to start it), in order of preference.
SHELLS: dict[str, tuple[str, Callable[[dict[str, Any], str], None]]] = {
    "ipython": ("IPython", _ipython),
    "bpython": ("bpython", _bpython),
    "python": ("code", _plain),
}


def pick_shell(forced: str | None) -> Callable[[dict[str, Any], str], None]:
    """The shell to start: ``forced`` (an error if it is not installed), else the first
    installed of IPython, bpython, the standard one."""
    for name, (module, start) in SHELLS.items():
        if forced in (None, name) and importlib.util.find_spec(module) is not None:
            return start
    module = SHELLS[forced][0] if forced else "python"
    raise click.ClickException(f"{module} is not installed (use --python for the standard shell)")


def report_commands(app_command: Callable[[Callable[..., Any]], Callable[..., Any]]
                    ) -> list[click.Command]:
    """The ``report`` and ``shell`` commands, loading the app with ``app_command``."""

    @click.command("report")
    @click.option("--all", "with_defaults", is_flag=True,
                  help="List every setting, not only those set in code or the environment.")
    @app_command
    def report(app: Celeriac, with_defaults: bool) -> None:
        """Versions and settings (secrets masked), for bug reports."""
        click.echo(report_text(app, with_defaults=with_defaults))

    @click.command("shell")
    @click.option("-I", "--ipython", "forced", flag_value="ipython", help="Force IPython.")
    @click.option("-B", "--bpython", "forced", flag_value="bpython", help="Force bpython.")
    @click.option("--python", "forced", flag_value="python", help="Force the standard shell.")
    @click.option("-T", "--without-tasks", is_flag=True, help="Do not add the tasks by name.")
    @app_command
    def shell(app: Celeriac, forced: str | None, without_tasks: bool) -> None:
        """An interactive Python with the app (app, celery, celeriac) and its tasks."""
        start = pick_shell(forced)
        namespace = shell_namespace(app, with_tasks=not without_tasks)
        from celeriac.task import Task

        tasks = sorted(name for name, value in namespace.items() if isinstance(value, Task))
        banner = (f"celeriac {__version__} shell, Python {platform.python_version()}\n"
                  f"app (also celery, celeriac): {app!r}\n"
                  f"tasks: {', '.join(tasks) or '(none)'}")
        sys.stdout.flush()
        start(namespace, banner)

    return [report, shell]
