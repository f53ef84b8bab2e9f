"""The pieces behind Celery's worker flags: ``%`` abbreviations, the pid lock, ``-X``, and
the shell picker (the end-to-end runs are in ``tests/e2e/test_celery_flags.py``)."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import types
from pathlib import Path

import click
import pytest

from celeriac.cli.report import SHELLS, pick_shell
from celeriac.exceptions import ConfigurationError
from celeriac.worker.nodenames import node_format
from celeriac.worker.options import parse_groups
from celeriac.worker.pidfile import Pidfile, PidfileLocked


def test_node_format_expands_celerys_abbreviations() -> None:
    node = "w1@web3.example.com"
    assert node_format("/l/%n%I.log", node, None) == "/l/w1.log"
    assert node_format("/l/%n%I.log", node, 0) == "/l/w1-1.log"  # Celery counts children from 1
    assert node_format("%n-%i", node, None) == "w1-0"
    assert node_format("%n-%i", node, 4) == "w1-5"
    assert node_format("%p|%h|%d|%%", node, None) == "w1@web3.example.com|web3.example.com|example.com|%"
    assert node_format("%n@%h", "lonely", None) == "celeriac@lonely"
    with pytest.raises(ConfigurationError, match="unknown abbreviation %x"):
        node_format("/l/%x.log", node, None)


def test_pidfile_refuses_a_running_pid_replaces_a_stale_one_and_removes_only_its_own(
        tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live:
        try:
            path.write_text(f"{live.pid}\n")
            with pytest.raises(PidfileLocked, match=f"names process {live.pid}"):
                Pidfile(str(path)).acquire()
            assert path.read_text() == f"{live.pid}\n"
        finally:
            live.kill()
    live.wait()
    for stale in (f"{live.pid}\n", "garbage\n", "12"):  # gone, not a pid, partial
        path.write_text(stale)
        pidfile = Pidfile(str(path)).acquire()
        assert path.read_text() == f"{os.getpid()}\n"
        pidfile.release()
        assert not path.exists()
    pidfile = Pidfile(str(path)).acquire()
    path.write_text("1\n")  # someone else's now: not ours to remove
    pidfile.release()
    assert path.read_text() == "1\n"


def test_exclude_queues_removes_from_every_group_and_refuses_an_empty_one() -> None:
    groups = parse_groups(["threads", "prefork:2:cpu,io"], concurrency=4, processes=None,
                          queues=["celery", "io"], default_queue="celery", exclude=["io"])
    assert [g.queues for g in groups] == [["celery", "celery.threads"], ["cpu", "celery.prefork"]]
    with pytest.raises(ConfigurationError, match="nothing to consume"):
        parse_groups(["solo"], concurrency=1, processes=None, queues=["celery"],
                     default_queue="celery", exclude=["celery", "celery.solo"])


def test_shell_prefers_ipython_then_bpython_and_a_forced_missing_one_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules: "not installed" for find_spec, whatever this environment has.
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "bpython", None)
    assert pick_shell(None) is SHELLS["python"][1]
    with pytest.raises(click.ClickException, match="bpython is not installed"):
        pick_shell("bpython")
    fake = types.ModuleType("IPython")
    fake.__spec__ = importlib.machinery.ModuleSpec("IPython", None)
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert pick_shell(None) is SHELLS["ipython"][1]
    assert pick_shell("python") is SHELLS["python"][1]
