"""Typed usage of the public API: mypy --strict checks this file (it is not a test module).

If a change to celeriac's types breaks what users write, mypy fails here.
"""

from __future__ import annotations

from typing import Any

from celeriac import (
    AsyncResult,
    Celeriac,
    Celery,
    GroupResult,
    Signature,
    Task,
    chain,
    current_app,
    group,
    shared_task,
    signature,
)
from celeriac.contrib.django.task import DjangoTask

app = Celeriac("typing_usage", broker="memory://", backend="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, name="feeds.fetch", queue="io", max_retries=3)
def fetch(self: Any, url: str) -> str:
    return f"{self.request.id}:{url}"


@shared_task
def shared_add(x: int, y: int) -> int:
    return x + y


@shared_task(bind=True, name="feeds.shared_fetch", max_retries=3)
def shared_fetch(self: Any, url: str) -> str:
    return f"{self.request.id}:{url}"


def use_shared() -> None:
    task: Task[[int, int], int] = shared_add
    total: int = shared_add(2, 3)
    result: AsyncResult[str] = shared_fetch.delay("http://example.invalid/feed")
    app_now: Celeriac = current_app
    app_now.autodiscover_tasks(["proj.orders"])
    app_now.autodiscover_tasks(lambda: ["proj.orders"], related_name="jobs", force=True)
    app_now.set_current()
    app_now.set_default()
    print(task, total, result)


def use() -> None:
    task: Task[[int, int], int] = add
    total: int = add(2, 3)
    result: AsyncResult[int] = add.delay(2, 3)
    later: AsyncResult[str] = fetch.delay("http://example.invalid/feed")
    value: int = result.get(timeout=10)
    text: str = later.get(timeout=10)
    again = add.apply_async((2, 3), countdown=5, queue="q", priority=5, expires=60)
    add.apply_async((2, 3), headers={"tenant": "acme"}, shadow="add-for-acme",
                    routing_key="q", exchange="", retry=False, add_to_parent=False)
    add.apply_async((2, 3), headers=["tenant"])  # type: ignore[arg-type]
    state: str = again.status
    other = app.AsyncResult(again.id)
    print(task, total, value, text, state, other.ready(), app.send_task("tasks.add", args=[1, 2]))


def use_bulk() -> None:
    sig: Signature[int] = add.s(2, 3).set(countdown=5, queue="q")
    one: AsyncResult[int] = sig.delay()
    grouped: GroupResult[int] = group(add.s(i, i) for i in range(10)).apply_async(priority=5)
    values: list[int] = grouped.get(timeout=10)
    pair = group(add.s(1, 1), add.s(2, 2)).delay()
    first: AsyncResult[int] = pair[0]
    done: int = pair.completed_count()
    many: list[AsyncResult[int]] = add.apply_many([(1, 2), (3, 4)], queue="bulk", chunk_size=500)
    sent: list[AsyncResult[int]] = app.send_many([add.s(1, 2), add.signature((3, 4), countdown=1)])
    named: Signature[Any] = app.signature("tasks.add", (1, 2), priority=1)
    print(one, values, first, done, many, sent, named, pair.ready(), grouped.id)


def use_canvas() -> None:
    # A partial call (the previous result comes first) is add.signature((3,)): s() is
    # checked against the task's whole parameter list.
    piped = (add.s(1, 2) | add.signature((3,)) | add.si(4, 5).set(countdown=1)).delay()
    last: AsyncResult[Any] = chain(add.s(1, 2), add.signature((3,))).apply_async(priority=3)
    linked: AsyncResult[int] = add.apply_async((1, 2), link=add.signature((3,)),
                                               link_error=[add.si(0, 0)])
    back: Signature[Any] = signature(add.s(1, 2).to_dict())
    errback: Signature[int] = add.s(1, 2).on_error(add.si(0, 0))
    maps: list[int] = add.starmap([(1, 2)]).delay().get()
    parts: list[list[int]] = add.chunks([(1, 2), (3, 4)], 1).delay().get()
    print(piped.parent, last, linked, back, errback, maps, parts)


async def use_async() -> None:
    """The async client API (``docs/asyncio.md``): the same types as the sync calls."""
    result: AsyncResult[int] = await add.adelay(2, 3)
    value: int = await result.aget(timeout=10, propagate=False, interval=0.5)
    again: AsyncResult[int] = await add.aapply_async((2, 3), countdown=5, queue="q")
    by_name: AsyncResult[Any] = await app.asend_task("tasks.add", (1, 2), priority=1)
    signed: AsyncResult[int] = await add.s(2, 3).adelay()
    values: list[int] = await group(add.s(i, i) for i in range(3)).delay().aget(timeout=10)
    shared: AsyncResult[int] = await shared_add.adelay(1, 2)
    await add.adelay("2", 3)  # type: ignore[arg-type]
    await add.aapply_async((2, 3), countdwn=5)  # type: ignore[call-arg]
    print(value, again, by_name, signed, values, shared)


def configure_as_celery_does() -> None:
    celery_app: Celeriac = Celery("proj", broker="memory://", backend="memory://",
                                  include=["proj.tasks"], namespace="CELERY")
    loaded: bool = celery_app.config_from_object("proj.celeryconfig", silent=True)
    from_env: bool = celery_app.config_from_envvar("CELERY_CONFIG_MODULE", silent=True)
    print(loaded, from_env)


def misuse_is_caught() -> None:
    """Each ignore below must be needed (strict mode warns about unused ones): mypy
    catches these mistakes before they reach a broker."""
    add.s("2", 3)  # type: ignore[arg-type]
    add.apply_async((2, 3), countdwn=5)  # type: ignore[call-arg]
    add.s(2, 3).set(priority="high")  # type: ignore[arg-type]
    add.apply_many([(1, 2)], task_idd="x")  # type: ignore[call-arg]
    shared_add.delay("2", 3)  # type: ignore[arg-type]
    shared_fetch(1)  # type: ignore[arg-type]


def on_commit(task: DjangoTask[[int, int], int]) -> None:
    """A Django project's tasks (``celeriac.contrib.django``): sent when the transaction commits."""
    task.delay_on_commit(1, 2)
    task.apply_async_on_commit((1, 2), countdown=5)
