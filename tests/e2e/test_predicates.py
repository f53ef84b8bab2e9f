"""``Ignore``, ``Reject`` and Celery's request fields, end to end: the real
``celeriac -A tasks worker -n ...`` on a SQLite broker.

``Ignore`` leaves the result as it was and acks the message; ``Reject(requeue=False)``
sends the message to the dead-letter store with its reason (FAILURE stored, one run);
``Reject(requeue=True)`` puts it back and it runs again, until broker_max_deliveries
dead-letters one that always rejects; ``self.request.hostname`` is the node name given
with ``-n``, and the other fields are Celery's.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from conftest import Project, executions, wait_until

from celeriac.exceptions import Reject

EXTRA = r'''
from celeriac.exceptions import Ignore, Reject

app.conf.broker_max_deliveries = 3

def _note(path, request):
    with open(path, "a") as f:
        f.write(f"{request.id} {os.getpid()}\n")

@app.task(bind=True)
def ignored(self, path):
    _note(path, self.request)
    raise Ignore()

@app.task(bind=True)
def rejected(self, path):
    _note(path, self.request)
    raise Reject("bad input", requeue=False)

@app.task(bind=True)
def requeued(self, path):
    _note(path, self.request)
    if not self.request.delivery_info["redelivered"]:
        raise Reject("not yet", requeue=True)
    return self.request.delivery_count

@app.task(bind=True)
def always_requeued(self, path):
    _note(path, self.request)
    raise Reject("never ready", requeue=True)

@app.task(bind=True)
def fields(self):
    r = self.request
    return {"hostname": r.hostname, "correlation_id": r.correlation_id,
            "called_directly": r.called_directly, "delivery_info": r.delivery_info,
            "callbacks": r.callbacks, "errbacks": r.errbacks, "chord": r.chord,
            "group_index": r.group_index, "reply_to": r.reply_to}
'''


def test_ignore_reject_and_the_request_fields_in_a_real_worker(
        project: Project, tmp_path: Path) -> None:
    project.write_tasks(EXTRA)
    project.app()
    tasks = sys.modules["tasks"]
    runs = tmp_path / "runs.txt"
    worker = project.start_worker("-P", "threads", "-c", "2", "-n", "w1@%h")

    fields = tasks.fields.apply_async(priority=5)
    seen = fields.get(timeout=30)
    assert seen == {
        "hostname": f"w1@{socket.gethostname()}", "correlation_id": fields.id,
        "called_directly": False, "callbacks": None, "errbacks": None, "chord": None,
        "group_index": None, "reply_to": "",
        "delivery_info": {"exchange": "", "routing_key": "celery", "priority": 5,
                          "redelivered": False},
    }

    ignored = tasks.ignored.delay(str(runs))
    rejected = tasks.rejected.delay(str(runs))
    requeued = tasks.requeued.delay(str(runs))
    always = tasks.always_requeued.delay(str(runs))

    assert requeued.get(timeout=30) == 2, "run again on its second delivery"
    with pytest.raises(Reject, match="bad input"):
        rejected.get(timeout=30)
    with pytest.raises(Reject, match="never ready"):
        always.get(timeout=30)
    letters = wait_until(lambda: len(tasks.app.broker.dead_letters()) == 2 and
                         tasks.app.broker.dead_letters(), message="two dead letters")
    assert sorted(letter.reason for letter in letters) == [
        "task rejected its message: bad input",
        "task rejected its message: never ready (requeue=True, but this was delivery 3 of "
        "broker_max_deliveries=3)",
    ]
    wait_until(lambda: ignored.id in executions(runs), message="the ignored task ran")
    counts = wait_until(lambda: (c := project.queue())["in_flight"] == 0 and c,
                        message="nothing in flight")
    assert (counts["ready"], counts["dead"]) == (0, 2), counts
    assert ignored.state == "PENDING", "Ignore stores nothing"
    ran = executions(runs)
    assert [len(ran[r.id]) for r in (ignored, rejected, requeued, always)] == [1, 1, 2, 3]
    log = worker.log()
    assert f"task tasks.ignored[{ignored.id}] ignored" in log
    assert f"task tasks.requeued[{requeued.id}] rejected its message, requeued: not yet" in log
    assert worker.stop() == 0
