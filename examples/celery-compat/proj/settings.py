"""Django-style settings: only the ``CELERY_``-prefixed names are the app's.

``proj.djangostyle`` reads this module with ``config_from_object(..., namespace="CELERY")``,
as a Django project's ``celery.py`` reads ``django.conf:settings``; the other names here
(``DEBUG``, ``INSTALLED_APPS``) are not the app's and are ignored.
"""

import os

DEBUG = False
INSTALLED_APPS = ["proj"]

CELERY_BROKER_URL = os.environ.get("PROJ_BROKER_URL", "sqlite:///proj.db")
CELERY_RESULT_BACKEND = os.environ.get("PROJ_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_ROUTES = {"proj.tasks.report": {"queue": "reports"}}
CELERY_WORKER_SEND_TASK_EVENTS = True
