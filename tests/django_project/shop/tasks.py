"""Tasks that use the ORM; imported by app.autodiscover_tasks() after django.setup()."""
import os
import sqlite3
import time

from django.db import connection

from celeriac import shared_task

from .models import Order

#: Raw DB-API connections opened by earlier tasks of this process.
_REMEMBERED: list[sqlite3.Connection] = []


@shared_task
def create_order(name):
    return Order.objects.create(name=name).pk


@shared_task
def order_names():
    return sorted(Order.objects.values_list("name", flat=True))


@shared_task
def remember_then_check():
    """How many connections earlier tasks here opened, and whether all are closed now; then
    open one (a query) and remember it for the next call."""
    closed = []
    for raw in _REMEMBERED:
        try:
            raw.execute("SELECT 1")
            closed.append(False)
        except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
            closed.append(True)
    Order.objects.count()
    _REMEMBERED.append(connection.connection)
    return {"pid": os.getpid(), "closed": closed}


@shared_task
def probe(seconds):
    """Open this task's connection, let other tasks run, and say whether it is still ours."""
    Order.objects.count()
    raw = connection.connection
    time.sleep(seconds)  # cooperative under gevent: the other tasks start meanwhile
    still_ours = connection.connection is raw
    Order.objects.count()
    return {"still_ours": still_ours, "raw": id(raw), "pid": os.getpid()}
