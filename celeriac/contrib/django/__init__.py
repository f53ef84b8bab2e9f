"""Django support, as Celery's Django fixup gives it (``docs/django.md``).

* :mod:`.fixup`: when ``DJANGO_SETTINGS_MODULE`` is set and Django is importable,
  ``django.setup()`` runs before the task modules are imported (in ``celeriac`` commands and
  in every worker process, after green patching), and an app's default task class becomes
  :class:`~celeriac.contrib.django.task.DjangoTask`;
* :mod:`.task`: ``DjangoTask``, with ``delay_on_commit`` and ``apply_async_on_commit``;
* :mod:`celeriac.middleware.django`: stale database connections closed around each task.

Nothing here imports Django until it is known to be wanted, so a project without Django
pays one environment lookup.
"""
