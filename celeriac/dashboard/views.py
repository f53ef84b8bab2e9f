"""The pages: Queues, Workers, Tasks and a task's page (read by :mod:`.tasks`), Periodic,
and /healthz (the Overview is :mod:`.overview`, the listings of messages are
:mod:`.messages`).

Each page reads :class:`~celeriac.dashboard.data.DashboardData` per request; the tables
that change refresh themselves with htmx (``?fragment=1`` renders the table alone). Every
action is a POST that :func:`~celeriac.dashboard.app.admin_required` guards, reached
through a confirmation step where it destroys something.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from celeriac.dashboard.app import admin_required, dashboard
from celeriac.dashboard.tasks import search_view, task_view

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

pages = Blueprint("pages", __name__, template_folder="templates")

#: Longest task id the search box accepts (ids are UUIDs; anything is allowed, bounded).
TASK_ID_LIMIT = 255


def _fragment() -> bool:
    return request.args.get("fragment") == "1"


@pages.get("/queues")
def queues() -> str:
    rows = dashboard().data.queues()
    template = "queues_table.html" if _fragment() else "queues.html"
    return render_template(template, rows=rows, page="queues")


@pages.get("/queues/<path:name>/purge")
@admin_required
def purge_confirm(name: str) -> str:
    return render_template("confirm.html", page="queues",
                           question=f"Delete every waiting message (ready and scheduled) of "
                                    f"queue {name}?",
                           action=url_for("pages.purge", name=name), button="Purge",
                           back=url_for("pages.queues"))


@pages.post("/queues/<path:name>/purge")
@admin_required
def purge(name: str) -> BaseResponse:
    count = dashboard().data.purge(name)
    flash(f"Purged {count} message(s) from {name}.")
    return redirect(url_for("pages.queues"))


@pages.post("/queues/<path:name>/pause")
@admin_required
def pause(name: str) -> BaseResponse:
    """Workers stop fetching from the queue within about a second (not destructive: no
    confirmation step; Resume undoes it)."""
    dashboard().data.pause(name)
    flash(f"Paused {name}: workers stop fetching from it within about a second.")
    return redirect(url_for("pages.queues"))


@pages.post("/queues/<path:name>/resume")
@admin_required
def resume(name: str) -> BaseResponse:
    dashboard().data.resume(name)
    flash(f"Resumed {name}.")
    return redirect(url_for("pages.queues"))


@pages.get("/workers")
def workers() -> str:
    rows = dashboard().data.workers()
    template = "workers_table.html" if _fragment() else "workers.html"
    return render_template(template, rows=rows, page="workers")


@pages.get("/periodic")
def periodic() -> str:
    view = dashboard().data.periodic()
    template = "periodic_table.html" if _fragment() else "periodic.html"
    return render_template(template, view=view, page="periodic")


@pages.get("/tasks")
def tasks() -> BaseResponse | tuple[str, int]:
    """The search (:mod:`.tasks`); ``?id=`` jumps to the task of that exact id."""
    task_id = (request.args.get("id") or "").strip()[:TASK_ID_LIMIT]
    if task_id:
        return redirect(url_for("pages.task", task_id=task_id))
    return search_view()


@pages.get("/tasks/<path:task_id>")
def task(task_id: str) -> str:
    return task_view(task_id)


@pages.post("/tasks/<path:task_id>/revoke")
@admin_required
def revoke(task_id: str) -> BaseResponse:
    terminate = request.form.get("terminate") == "1"
    dashboard().data.revoke(task_id, terminate=terminate)
    flash(f"Task {task_id} revoked{' and terminated' if terminate else ''}.")
    return redirect(url_for("pages.task", task_id=task_id))


@pages.get("/healthz")
def healthz() -> tuple[BaseResponse, int]:
    """200 when the broker and the result backend answer, else 503 (no secrets in it)."""
    status = dashboard().data.health()
    healthy = all(value == "ok" for value in status.values())
    return jsonify({"status": "ok" if healthy else "unhealthy", "time": time.time(),
                    **status}), 200 if healthy else 503
