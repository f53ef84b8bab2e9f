"""Celery's ``celery.utils`` names that applications import, where celeriac has them:
:mod:`celeriac.utils.log` (``get_task_logger``, ``get_logger``)."""
