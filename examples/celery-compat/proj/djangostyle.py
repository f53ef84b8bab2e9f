"""The same project configured the way a Django project's ``proj/celery.py`` is.

``celeriac -A proj.djangostyle worker`` runs the same tasks with the settings read from
``proj/settings.py`` under the ``CELERY_`` namespace.
"""

from celeriac import Celery

app = Celery("proj", include=["proj.tasks"])
app.config_from_object("proj.settings", namespace="CELERY")
