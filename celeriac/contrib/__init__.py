"""Optional parts that are not needed to send or run tasks, each in its own module.

* :mod:`celeriac.contrib.testing`: an in-process worker for tests
  (``start_worker``) and the test app it is usually paired with;
* :mod:`celeriac.contrib.pytest`: the pytest plugin with Celery's fixtures
  (``celery_app``, ``celery_worker``...), registered as a pytest entry point.

Same paths as Celery's ``celery.contrib``, so tests port by changing imports.
"""
