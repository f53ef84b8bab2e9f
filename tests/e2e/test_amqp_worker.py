"""The RabbitMQ broker's start-up rules, with the real CLI worker.

RabbitMQ closes the channel of a delivery left unacked longer than its
``consumer_timeout``, with every other delivery of the process, so a hard time limit
above it cannot be kept: the worker refuses to start, and without a hard limit it takes
the bound as one. A broker with no state store is refused at start too, saying what to
set.
"""

from __future__ import annotations

import pytest
from conftest import Project, gevent_patched

pytestmark = pytest.mark.skipif(gevent_patched(), reason="worker-side only")

BOUNDS = "\napp.conf.update(broker_consumer_timeout=100, broker_lease_timeout=10)\n"


def test_a_hard_limit_past_the_consumer_timeout_is_refused_at_start(amqp_project: Project) -> None:
    amqp_project.write_tasks(BOUNDS)
    worker = amqp_project.start_worker("-P", "threads", "-c", "2", "--time-limit", "90",
                                       ready=False)
    assert worker.wait(60) != 0
    log = worker.log()
    assert "task_time_limit=90s is longer than RabbitMQ lets a delivery stay unacked" in log
    assert "broker_consumer_timeout=100s minus 2 x broker_lease_timeout=10s" in log
    assert "Traceback" not in log


def test_without_a_hard_limit_the_bound_is_the_limit(amqp_project: Project) -> None:
    amqp_project.write_tasks(BOUNDS)
    worker = amqp_project.start_worker("-P", "threads", "-c", "2")
    worker.wait_for_log("no task_time_limit: tasks get a hard time limit of 80s")
    app = amqp_project.app()
    assert app.tasks["tasks.add"].delay(2, 3).get(timeout=30) == 5
    assert worker.stop() == 0


def test_a_worker_without_a_state_store_says_what_to_set(amqp_project: Project) -> None:
    amqp_project.write_tasks("\napp.conf.update(result_backend=\"memory://\")\n")
    worker = amqp_project.start_worker("-P", "threads", "-c", "2", ready=False)
    assert worker.wait(60) != 0
    assert "set broker_state_url to a redis:// or sqlite:// URL" in worker.log()
