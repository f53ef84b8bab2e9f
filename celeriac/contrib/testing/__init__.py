"""Testing your own tasks with a real worker in the test's process.

* :mod:`~celeriac.contrib.testing.worker`: :func:`start_worker`, a context manager
  that runs a real consumer and pool on a background thread;
* :mod:`~celeriac.contrib.testing.app`: :func:`TestApp`, an app on the in-process
  ``memory://`` broker and backend;
* :mod:`~celeriac.contrib.testing.tasks`: ``celery.ping``, the task
  ``start_worker`` sends to check that the worker runs tasks.

``docs/testing.md`` shows how they fit together, and where they differ from Celery.
"""
