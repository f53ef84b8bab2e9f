"""Send options end to end: the real ``celeriac -A tasks worker`` on a SQLite broker.

Custom headers (``apply_async(headers=...)``) reach the task as ``self.request.headers``
and attributes, ``shadow=`` names the run in the worker's log lines, and a retry
(``self.retry()``) sends the custom headers and shadow name again, as Celery's does.
"""

from __future__ import annotations

import sys

from conftest import Project

EXTRA = r'''
@app.task(bind=True)
def seen(self):
    return [self.request.headers, self.request.tenant, self.request.shadow]

@app.task(bind=True, max_retries=3)
def flaky(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return [self.request.headers, self.request.shadow, self.request.retries]
'''


def test_headers_and_shadow_in_the_task_the_log_and_a_retry(project: Project) -> None:
    project.write_tasks(EXTRA)
    project.app()
    tasks = sys.modules["tasks"]
    # One thread: with two, the retry's message can run and store SUCCESS before the first
    # run stored RETRY, which then overwrites it (a race of the result store, not of this).
    worker = project.start_worker("-P", "threads", "-c", "1")

    result = tasks.seen.apply_async(headers={"tenant": "acme"}, shadow="seen-for-acme")
    assert result.get(timeout=30) == [{"tenant": "acme"}, "acme", "seen-for-acme"]
    worker.wait_for_log(f"task seen-for-acme[{result.id}] succeeded")

    retried = tasks.flaky.apply_async(headers={"tenant": "acme", "trace": "t-1"},
                                      shadow="flaky-for-acme")
    assert retried.get(timeout=30) == [{"tenant": "acme", "trace": "t-1"}, "flaky-for-acme", 1]
    worker.wait_for_log(f"task flaky-for-acme[{retried.id}] will be retried")
    worker.wait_for_log(f"task flaky-for-acme[{retried.id}] succeeded")
    assert f"tasks.flaky[{retried.id}]" not in worker.log()
    assert worker.stop() == 0
