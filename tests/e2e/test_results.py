"""The results API against a real ``celeriac worker`` subprocess (SQLite broker and backend):

* ``self.update_state(state="PROGRESS", meta=...)`` is seen by the client while the
  task runs, and ``get()`` keeps waiting through it until SUCCESS;
* the tasks a task sends are its ``children`` (stored with its result) and
  ``collect()`` walks them;
* a task's own exception class comes back as that class, because the client imported
  the module that defines it (it is looked up, never imported by name).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from types import ModuleType

import pytest
from conftest import Project, wait_until

from celeriac.exceptions import TimeoutError

EXTRA = r'''
class OutOfStock(Exception):
    def __init__(self, sku, left):
        super().__init__(sku, left)
        self.sku, self.left = sku, left

@app.task(bind=True)
def pack(self, gate, n):
    self.update_state(state="PROGRESS", meta={"packed": 0, "of": n})
    while not os.path.exists(gate):
        time.sleep(0.02)
    for i in range(n):
        add.delay(i, i)
    return n

@app.task
def short(sku):
    raise OutOfStock(sku, 0)
'''


@pytest.fixture
def tasks(project: Project) -> ModuleType:
    project.write_tasks(extra=EXTRA)
    project.app()
    return sys.modules["tasks"]


def test_progress_then_success_children_and_a_custom_exception(project: Project,
                                                               tasks: ModuleType) -> None:
    project.start_worker("-P", "threads", "-c", "2")
    gate = project.path / "gate"
    result = tasks.pack.delay(str(gate), 3)
    wait_until(lambda: result.state == "PROGRESS", timeout=30,
               message=f"PROGRESS state (now {result.state})")
    assert result.info == {"packed": 0, "of": 3}
    shown = json.loads(project.cli("-A", "tasks", "result", result.id).stdout)
    assert shown == {"task_id": result.id, "status": "PROGRESS", "result": {"packed": 0, "of": 3}}
    assert not result.ready() and result.date_done is None
    with pytest.raises(TimeoutError):
        result.get(timeout=0.5)  # PROGRESS is not ready: the wait goes on
    gate.touch()
    assert result.get(timeout=30) == 3
    assert result.state == "SUCCESS" and isinstance(result.date_done, datetime)

    children = result.children
    assert children is not None and len(children) == 3
    assert [value for _, value in result.collect(timeout=30)] == [3, 0, 2, 4]

    failed = tasks.short.delay("sku-9")
    with pytest.raises(tasks.OutOfStock) as info:
        failed.get(timeout=30)
    assert (info.value.sku, info.value.left) == ("sku-9", 0)
    assert "Remote traceback" in "".join(getattr(info.value, "__notes__", []))
