"""Typed arguments and results through the real CLI worker: a datetime goes in with
kombu's marker and comes back a datetime (``celeriac.serialization``)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from conftest import Project

SHIFT = '''
from datetime import datetime, timedelta

@app.task
def shift(when, days):
    assert isinstance(when, datetime), type(when)
    return when + timedelta(days=days)
'''


def test_a_datetime_argument_comes_back_a_datetime(project: Project) -> None:
    project.write_tasks(SHIFT)
    project.start_worker("-P", "threads", "-c", "2")
    app = project.app()
    moment = datetime(2026, 12, 3, 14, 25, tzinfo=timezone(timedelta(hours=2)))
    assert app.tasks["tasks.shift"].delay(moment, 1).get(timeout=30) == moment + timedelta(days=1)
    naive = datetime(2026, 12, 3, 14, 25, 0, 5)
    assert app.tasks["tasks.shift"].delay(when=naive, days=-1).get(timeout=30) == naive - timedelta(1)
    # The command line speaks the markers too: in --args, and in what `result` prints.
    marker = {"__type__": "datetime", "__value__": "2026-12-03T14:25:00"}
    task_id = project.cli("-A", "tasks", "call", "tasks.shift", "--args",
                          json.dumps([marker, 2])).stdout.strip()
    printed = json.loads(project.cli("-A", "tasks", "result", task_id, "--wait", "30").stdout)
    assert printed["result"] == {"__type__": "datetime", "__value__": "2026-12-05T14:25:00"}
    assert app.tasks["tasks.add"].delay(Decimal("0.1"), Decimal("0.2")).get(timeout=30) == Decimal("0.3")


PACKED = '''
app.conf.accept_content = ["json", "msgpack"]

@app.task(compression="gzip")
def shout(text):
    return text.upper()

@app.task(serializer="msgpack")
def concat(blob, more):
    assert isinstance(blob, bytes), type(blob)
    return blob + more
'''


def test_a_gzip_compressed_task_and_a_msgpack_task_run_on_the_cli_worker(project: Project) -> None:
    project.write_tasks(PACKED)
    project.start_worker("-P", "prefork", "-c", "2")
    app = project.app()
    assert app.tasks["tasks.shout"].delay("é" * 5000).get(timeout=30) == "É" * 5000
    assert app.tasks["tasks.concat"].delay(b"\x00\xff", b"!").get(timeout=30) == b"\x00\xff!"
    assert app.tasks["tasks.concat"].apply_async(
        [b"a", b"b"], compression="bzip2").get(timeout=30) == b"ab"
    assert app.tasks["tasks.add"].apply_async([2, 3], compression="lzma").get(timeout=30) == 5
    assert project.queue()["dead"] == 0
