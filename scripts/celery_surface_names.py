"""Print ``tests/celery_names.txt``: the names of Celery's user-facing surface, from Celery.

Run with an interpreter that has Celery installed (celeriac does not depend on it)::

    bench/.venv-compare/bin/python scripts/celery_surface_names.py > tests/celery_names.txt

``tests/test_migrating_table.py`` checks that ``docs/celery-surface.csv`` has a row for
every name listed here (and for every setting in ``celeriac/celery_settings.py``, made
the same way by ``scripts/celery_settings.py``), so that the table in
``docs/migrating.md`` cannot leave out part of Celery's surface. The names are read
from Celery's own objects (click commands and parameters, class attributes, module
names) rather than typed, so the list is exactly Celery's; the few names that live in
function signatures or method bodies are listed below with where they come from.

One line per name: ``kind<TAB>name<TAB>aliases<TAB>takes``, where ``aliases`` are the
option strings of a command-line option (space-separated) and ``takes`` is ``flag`` or
``value`` for an option (empty otherwise).
"""

from __future__ import annotations

import inspect
import re

import celery
import celery.exceptions
import celery.signals
import celery.states
import click
from celery.app.base import Celery
from celery.app.task import Task
from celery.bin.celery import celery as celery_command
from celery.bin.worker import worker as worker_command
from celery.result import AsyncResult

#: ``@app.task`` keywords that are not Task attributes: ``inner_create_task_cls(shared,
#: filter, lazy)`` in celery/app/base.py, and the autoretry options read by
#: celery/app/autoretry.py.
DECORATOR_ONLY = ("shared", "filter", "lazy", "autoretry_for", "dont_autoretry_for",
                  "retry_kwargs", "retry_backoff", "retry_backoff_max", "retry_jitter")
#: Routing and publishing options a task may set as attributes: the list in
#: ``Task.bind`` and ``Task._get_exec_options`` (celery/app/task.py).
EXEC_OPTIONS = ("queue", "exchange", "exchange_type", "routing_key", "delivery_mode",
                "compression", "immediate", "mandatory")
#: ``kombu.Producer.publish`` message properties that ``apply_async`` passes through
#: ("Also supports all keyword arguments supported by kombu.Producer.publish", its
#: docstring's note), as Celery apps use them: the AMQP ones and reply/correlation ids.
PUBLISH_OPTIONS = ("reply_to", "correlation_id", "delivery_mode", "mandatory", "immediate")
#: Options that Celery's Task class defines as properties (with a setter): ``backend``.
PROPERTIES = ("backend",)
#: Task class attributes that are not options (set by Celery itself).
NOT_OPTIONS = {"app", "from_config", "request_stack"}


def _option(kind: str, param: click.Parameter) -> str:
    opts = [*param.opts, *param.secondary_opts]
    name = next((o for o in opts if o.startswith("--")), opts[0])
    takes = "flag" if isinstance(param, click.Option) and param.is_flag else "value"
    return f"{kind}\t{name}\t{' '.join(opts)}\t{takes}"


def task_options() -> list[str]:
    attributes = [k for k, v in vars(Task).items() if not k.startswith("_")
                  and not callable(v) and not isinstance(v, property | classmethod | staticmethod)]
    from_config = [attribute for attribute, _setting in Task.from_config]
    signature = [p for p in inspect.signature(Celery._task_from_fun).parameters
                 if p not in ("self", "fun", "options")]
    return sorted({*attributes, *from_config, *signature, *DECORATOR_ONLY, *EXEC_OPTIONS,
                   *PROPERTIES}
                  - NOT_OPTIONS)


def send_options() -> list[str]:
    """The options ``Task.apply_async`` documents (its docstring's ``name (type):``
    entries) and takes by name, less the call's own ``args`` and ``kwargs``."""
    doc = inspect.getdoc(Task.apply_async) or ""
    documented = {match.group(1) for match in re.finditer(r"^    (\w+) \([^)]*\):", doc, re.M)}
    named = set(inspect.signature(Task.apply_async).parameters)
    return sorted((documented | named | set(PUBLISH_OPTIONS))
                  - {"self", "args", "kwargs", "options"})


def lines() -> list[str]:
    out = [f"command\t{name}\t\t" for name in sorted(celery_command.commands)]
    out += [_option("celery option", p) for p in celery_command.params if p.name != "help"]
    out += [_option("worker flag", p) for p in worker_command.params if p.name != "help"]
    out += [f"task option\t{name}\t\t" for name in task_options()]
    out += [f"send option\t{name}\t\t" for name in send_options()]
    out += [f"AsyncResult\t{name}\t\t" for name in dir(AsyncResult) if not name.startswith("_")]
    out += [f"exception\t{name}\t\t" for name in celery.exceptions.__all__]
    out += [f"state\t{name}\t\t" for name in dir(celery.states) if name.isupper()]
    out += [f"signal\t{name}\t\t" for name in dir(celery.signals) if not name.startswith("_")]
    return out


def main() -> None:
    print("# Celery's user-facing names (generated: do not edit), from Celery "
          f"{celery.__version__} by:")
    print("#   bench/.venv-compare/bin/python scripts/celery_surface_names.py > tests/celery_names.txt")
    print("# kind<TAB>name<TAB>aliases<TAB>takes")
    for line in lines():
        print(line)


if __name__ == "__main__":
    main()
