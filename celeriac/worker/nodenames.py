"""Node names and the ``%`` abbreviations of Celery's worker flags.

Two expansions, as in Celery (``celery.utils.nodenames``):

* ``-n/--hostname`` is expanded once, with the *machine's* host name
  (:func:`node_name`): ``-n w1@%h`` is ``w1@web3.example.com``;
* ``--logfile`` and ``--pidfile`` are expanded with the *node name* and the
  process index (:func:`node_format`), so one deploy line gives each node and
  each worker process its own file: ``--logfile=/var/log/celeriac/%n%I.log``.
"""

from __future__ import annotations

import os
import re
import socket

from celeriac.exceptions import ConfigurationError

_ABBREVIATION = re.compile(r"%(.)")


def node_name(template: str) -> str:
    """``-n`` as Celery reads it: ``%h`` the host name, ``%n`` its first label, ``%d`` the
    rest (the domain), ``%%`` a percent sign: ``-n w1@%h`` is ``w1@web3.example.com``."""
    host = socket.gethostname()
    name, _, domain = host.partition(".")
    values = {"h": host, "n": name, "d": domain, "%": "%"}
    return re.sub(r"%([hnd%])", lambda match: values[match.group(1)], template)


def resolve_node(template: str) -> str:
    """The node name of a worker started in this process: ``-n`` expanded, or celeriac's
    default ``celeriac.PID@HOST`` (Celery's is ``celery@HOST``: one per host; celeriac's
    default lets several nodes share a host without ``-n``)."""
    return node_name(template) if template else f"celeriac.{os.getpid()}@{socket.gethostname()}"


def node_format(template: str, node: str, index: int | None, *, option: str = "--logfile") -> str:
    """Expand a ``--logfile``/``--pidfile`` path for ``node`` and one of its processes.

    As Celery's ``node_format``: ``%p`` the whole node name, ``%n`` its name part (before
    ``@``), ``%h`` its host part, ``%d`` that host's domain, ``%i`` the process index
    (``0`` for the supervisor, ``1``, ``2``... for worker processes, whose celeriac index
    starts at 0), ``%I`` the same with a leading ``-`` and empty for the supervisor, and
    ``%%`` a percent sign. ``index`` is None for the supervisor. Any other ``%x`` is an
    error rather than a file name with a ``%x`` in it.
    """
    name, at, host = node.partition("@")
    if not at:
        name, host = "celeriac", node
    values = {
        "p": node, "n": name, "h": host, "d": host.partition(".")[2], "%": "%",
        "i": "0" if index is None else str(index + 1),
        "I": "" if index is None else f"-{index + 1}",
    }

    def expand(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigurationError(
                f"{option} {template!r}: unknown abbreviation %{key} (known: %p node name, "
                "%n its name, %h its host, %d the domain, %i process index, %I -index, %%)")
        return values[key]

    return _ABBREVIATION.sub(expand, template)
