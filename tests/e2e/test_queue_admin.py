"""Queue administration end to end, on every broker kind.

Pausing a queue: a real CLI worker stops fetching from a paused queue within
about a second and says so in its log, the queue keeps taking messages meanwhile, and the
worker runs them once the queue is resumed (``celeriac queue pause/resume``), on every
broker kind. The other queues of the worker go on being served while one is paused.
On RabbitMQ the worker stays subscribed, so the paused queue's message waits in the worker
process, unstarted (``docs/rabbitmq.md``).

A dead letter listed by ``celeriac dead`` and requeued with ``--requeue --id`` runs on a
worker started afterwards."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import BROKER_KINDS, Project, project_on

#: How long a paused queue is watched for a task that should not run (a worker re-reads the
#: paused set every second, and fetches within milliseconds of a message otherwise).
WATCH = 2.0


@pytest.mark.parametrize("broker", BROKER_KINDS)
def test_a_paused_queue_is_not_served_until_resumed(broker: str,
                                                    request: pytest.FixtureRequest) -> None:
    project: Project = project_on(request, broker)
    app = project.app()
    worker = project.start_worker("-P", "threads", "-c", "2", "-Q", "celery,other")
    assert app.tasks["tasks.add"].delay(1, 1).get(timeout=30) == 2  # served before the pause

    project.cli("-A", "tasks", "queue", "pause", "celery")
    worker.wait_for_log("queue celery is paused")
    assert "celery" in app.broker.paused()
    held = app.tasks["tasks.add"].delay(2, 3)
    served = app.tasks["tasks.add"].apply_async((4, 5), queue="other")
    assert served.get(timeout=30) == 9  # the worker's other queue is still served
    time.sleep(WATCH)
    assert not held.ready()
    stats = app.broker.stats()["celery"]
    assert stats.paused
    if broker != "amqp":  # RabbitMQ pushed it to the worker, which holds it unstarted
        assert stats.ready == 1

    project.cli("-A", "tasks", "queue", "resume", "celery")
    assert held.get(timeout=30) == 5
    worker.wait_for_log("queue celery was resumed")
    assert "celery" not in app.broker.paused()
    assert worker.stop() == 0


@pytest.mark.parametrize("broker", BROKER_KINDS)
def test_a_dead_letter_requeued_from_the_cli_runs(broker: str,
                                                  request: pytest.FixtureRequest) -> None:
    project: Project = project_on(request, broker)
    app = project.app()
    result = app.tasks["tasks.add"].delay(20, 22)
    deadline = time.monotonic() + 30
    got: list[Any] = []
    while not got and time.monotonic() < deadline:
        got = app.broker.fetch(["celery"], 1, consumer="test", lease=60, timeout=1)
    assert app.broker.dead_letter(got, "poisoned by the test") == [True]
    # This process stops consuming (on RabbitMQ its subscription would take the requeued
    # message before the worker could).
    app.broker.close()
    [listed] = [json.loads(line) for line in
                project.cli("-A", "tasks", "dead", "-Q", "celery").stdout.splitlines()]
    assert (listed["id"], listed["reason"]) == (result.id, "poisoned by the test")
    out = project.cli("-A", "tasks", "dead", "-Q", "celery", "--requeue", "--id",
                      listed["message_id"]).stdout
    assert "requeued 1 dead letter(s) of celery" in out
    assert app.broker.stats()["celery"].dead == 0
    project.start_worker("-P", "threads", "-c", "2")
    assert result.get(timeout=30) == 42
    # Nothing left to requeue or delete; -f because stdin is not a terminal.
    assert "deleted 0" in project.cli("-A", "tasks", "dead", "-Q", "celery", "--delete",
                                      "-f").stdout
