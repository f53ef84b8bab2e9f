"""What a Django view would do, run by tests/e2e/test_django.py: ``python scenarios.py NAME``.

Prints one JSON line with what happened.
"""
import json
import sys

import django
import proj  # noqa: F401  (the app, as Django's startup would load it)

django.setup()

from django.db import transaction  # noqa: E402
from shop.models import Order  # noqa: E402
from shop.tasks import create_order, order_names, probe, remember_then_check  # noqa: E402


class Rollback(Exception):
    pass


def rolled_back(name):
    try:
        with transaction.atomic():
            Order.objects.create(name=f"{name}-row")
            create_order.delay_on_commit(name)
            raise Rollback
    except Rollback:
        pass
    return {"rows": Order.objects.filter(name=f"{name}-row").count()}


def committed(name):
    with transaction.atomic():
        create_order.delay_on_commit(name)
        create_order.apply_async_on_commit((f"{name}-async",), countdown=0)
    return {"task_class": [cls.__name__ for cls in create_order.__class__.__mro__]}


def send(count):
    results = [create_order.delay(f"order-{i}") for i in range(int(count))]
    pks = [result.get(timeout=60) for result in results]
    return {"pks": pks, "names": order_names.delay().get(timeout=60)}


def checks(count):
    return [remember_then_check.delay().get(timeout=60) for _ in range(int(count))]


def probes(count, seconds):
    results = [probe.delay(float(seconds)) for _ in range(int(count))]
    return [result.get(timeout=60) for result in results]


SCENARIOS = {"rolled_back": rolled_back, "committed": committed, "send": send, "checks": checks,
             "probes": probes}

if __name__ == "__main__":
    name, *args = sys.argv[1:]
    print(json.dumps(SCENARIOS[name](*args)))
