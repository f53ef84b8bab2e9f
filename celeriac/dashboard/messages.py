"""The Scheduled, Retries and Dead letters pages, and their actions.

Each page lists one queue's messages of its kind a page at a time, from the broker
(:meth:`~celeriac.dashboard.data.DashboardData.listing`: offset and limit come from the
query string and go to the broker's server-side pagination). Its actions, on the rows
chosen or on all of the queue's messages of the kind, are:

* dead letters: **requeue** (run again, deliveries reset) and **delete**;
* scheduled messages and retries: **run now** (made ready) and **delete**.

An action's URL answers a GET with the confirmation page (what will happen to how many
messages) and does it on the POST that page sends: two steps, no JavaScript needed. The
GET and the POST are admin-only (a viewer gets 403 from the server) and the POST passes
the Origin check every POST does (:func:`~celeriac.dashboard.app._guard`). What a broker
refuses (RabbitMQ cannot take a message off its delay ladder) comes back as the broker's
message, never a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from celeriac.brokers.browse import MAX_PAGE, DeletableKind, Kind
from celeriac.dashboard.app import admin_required, dashboard
from celeriac.exceptions import BrokerError, ConfigurationError

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict
    from werkzeug.wrappers import Response as BaseResponse

messages = Blueprint("messages", __name__, template_folder="templates")

#: Rows per page unless the query string says otherwise; the most it may say.
PAGE_SIZE = 50
PAGE_SIZE_MAX = 200
#: Longest queue name and message id accepted from a request (bounded, not validated).
NAME_LIMIT = 255
#: Page links shown either side of the current page.
PAGE_LINKS = 2

TITLES: dict[str, str] = {"scheduled": "Scheduled", "retries": "Retries", "dead": "Dead letters"}
#: The actions of each page: URL segment -> (button, what it does, in a sentence).
ACTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "dead": {"requeue": ("Requeue", "run again (deliveries reset)"),
             "delete": ("Delete", "delete for good")},
    "scheduled": {"run": ("Run now", "make ready now, ahead of their time"),
                  "delete": ("Delete", "delete for good")},
    "retries": {"run": ("Run now", "retry now, ahead of their countdown"),
                "delete": ("Delete", "delete for good")},
}
NOUNS: dict[str, str] = {"scheduled": "scheduled message(s)", "retries": "retry message(s)",
                         "dead": "dead letter(s)"}


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as an int within ``[low, high]``; ``default`` if not one."""
    try:
        value = int(request.args.get(name, default))
    except ValueError:
        return default
    return min(max(value, low), high)


def _queue_arg(source: MultiDict[str, str]) -> str | None:
    queue = (source.get("queue") or "").strip()
    return queue[:NAME_LIMIT] or None


def page_links(offset: int, limit: int, total: int) -> list[tuple[int, int | None]]:
    """``(page number, its offset)`` for the first, the last and the pages around the
    current one; ``(0, None)`` marks a gap."""
    pages = max(1, -(-total // limit))
    current = offset // limit
    shown = sorted({0, pages - 1, *range(max(0, current - PAGE_LINKS),
                                         min(pages, current + PAGE_LINKS + 1))})
    links: list[tuple[int, int | None]] = []
    for number in shown:
        if number - 1 not in shown and number > 0:
            links.append((0, None))
        links.append((number + 1, number * limit))
    return links


def _listing(kind: Kind) -> str:
    offset = int_arg("offset", 0, 0, 10**12)
    limit = int_arg("limit", PAGE_SIZE, 1, PAGE_SIZE_MAX)
    error = None
    listing = None
    try:
        listing = dashboard().data.listing(_queue_arg(request.args), kind, offset, limit)
    except (BrokerError, ConfigurationError) as exc:
        error = str(exc)
    links = page_links(offset, limit, listing.page.total) if listing else []
    return render_template("messages.html", page=kind, kind=kind, title=TITLES[kind],
                           listing=listing, error=error, links=links, actions=ACTIONS[kind],
                           offset=offset, limit=limit)


@messages.get("/scheduled")
def scheduled() -> str:
    return _listing("scheduled")


@messages.get("/retries")
def retries() -> str:
    return _listing("retries")


@messages.get("/dead")
def dead() -> str:
    return _listing("dead")


def _chosen(source: MultiDict[str, str]) -> list[str] | None:
    """The message ids an action is for: ``None`` for all (``all=1``); at most a page's."""
    if source.get("all") == "1":
        return None
    chosen = [i[:NAME_LIMIT] for i in source.getlist("id") if i][:MAX_PAGE]
    return list(dict.fromkeys(chosen))


@messages.route("/<any(scheduled, retries, dead):kind>/<any(requeue, run, delete):action>",
                methods=["GET", "POST"])
@admin_required
def act(kind: str, action: str) -> BaseResponse | str:
    """GET: the confirmation page; POST (sent by it): the action."""
    if action not in ACTIONS[kind]:
        abort(404)
    source = request.form if request.method == "POST" else request.args
    queue = _queue_arg(source)
    if queue is None:
        abort(400, "which queue?")
    ids = _chosen(source)
    back = url_for(f"messages.{kind}", queue=queue)
    if ids == []:
        flash("Choose the messages first (or all of them).", "error")
        return redirect(back)
    data = dashboard().data
    button, effect = ACTIONS[kind][action]
    if request.method == "GET":
        try:
            count = data.total(queue, cast(Kind, kind)) if ids is None else len(ids)
        except BrokerError as exc:
            flash(str(exc), "error")
            return redirect(back)
        which = f"all {count}" if ids is None else f"the {count} chosen"
        return render_template("confirm.html", page=kind, button=button, back=back,
                               action=url_for("messages.act", kind=kind, action=action),
                               question=f"{button}: {effect}, {which} {NOUNS[kind]} of queue "
                                        f"{queue}?",
                               fields=[("queue", queue), *(("id", i) for i in ids or []),
                                       *([("all", "1")] if ids is None else [])])
    try:
        if action == "requeue":
            done = data.requeue_dead(queue, ids)
        elif action == "delete":
            done = data.delete(queue, cast(DeletableKind, kind), ids)
        else:
            done = data.run_now(queue, cast(Kind, kind), ids)
    except (BrokerError, ConfigurationError) as exc:
        flash(f"{button} refused by the broker: {exc}", "error")
        return redirect(back)
    verb = {"requeue": "Requeued", "delete": "Deleted", "run": "Made ready"}[action]
    flash(f"{verb} {done} {NOUNS[kind]} of {queue}.")
    return redirect(back)
