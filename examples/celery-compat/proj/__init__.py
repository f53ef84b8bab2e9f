"""Celery's tutorial layout: the package exposes the app so ``-A proj`` finds it."""

from .celery import app as celery_app

__all__ = ("celery_app",)
