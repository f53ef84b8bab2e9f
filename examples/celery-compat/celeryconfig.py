"""Settings in Celery's lowercase names, loaded by ``app.config_from_object("celeryconfig")``.

Unchanged from a Celery project: a module of plain assignments. The broker and the result
backend come from the environment so the same file serves the demo and the tests.
"""

import os

broker_url = os.environ.get("PROJ_BROKER_URL", "sqlite:///proj.db")
result_backend = os.environ.get("PROJ_RESULT_BACKEND", broker_url)

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

task_track_started = True
result_expires = 3600
worker_prefetch_multiplier = 4
task_routes = {"proj.tasks.report": {"queue": "reports"}}
