"""The application object: settings, task registry, routing and sending.

One :class:`Celeriac` per project, usually a module-level ``app``. It is cheap
to create: the broker and result backend are opened lazily, once per process,
so importing the app in a parent that later starts workers opens nothing.

Every message is built in one place, :meth:`Celeriac._prepare`, whether it is
sent alone (``send_task``) or with many others (``send_many``: groups and
``Task.apply_many``), so single and bulk sends route and encode alike.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload
from urllib.parse import urlparse

from celeriac import _state
from celeriac.app.plan import SendPlan
from celeriac.backends import ResultBackend, backend_from_url
from celeriac.brokers import Broker, OutgoingMessage, broker_from_url
from celeriac.brokers.base import note_stored
from celeriac.context import current_task_var
from celeriac.exceptions import ConfigurationError, NotRegistered
from celeriac.message import Envelope
from celeriac.result import AsyncResult, add_to_parent
from celeriac.send_options import routed_queue
from celeriac.settings import Settings, suggest
from celeriac.task import MESSAGE_OPTIONS, Task, TaskOptions, check_send_options
from celeriac.validators import AMQP_SCHEMES
from celeriac.worker.options import pool_queue

if TYPE_CHECKING:
    from typing import Unpack

    from celeriac.canvas import Signature
    from celeriac.control import Control
    from celeriac.discovery import Discovery, Packages
    from celeriac.middleware.base import Pipeline
    from celeriac.task import MessageOptions, SendOptions

P = ParamSpec("P")
R = TypeVar("R")

#: Messages per ``Broker.publish`` call in ``send_many``: large enough that the
#: per-call cost (a transaction, a round trip) vanishes, small enough that one
#: call never holds the SQLite write lock or builds a Redis pipeline for long.
BULK_CHUNK_SIZE = 1000


#: Settings only the RabbitMQ broker acts on (``broker_use_ssl`` aside: see broker_options).
AMQP_ONLY = ("broker_state_url", "broker_queue_type", "task_default_queue_type",
             "task_create_missing_queue_type", "broker_heartbeat", "broker_connection_timeout",
             "broker_consumer_timeout", "task_queue_max_priority")
#: celeriac's name for the queue type, then Celery's two.
_QUEUE_TYPE_NAMES = ("broker_queue_type", "task_default_queue_type",
                     "task_create_missing_queue_type")
#: AMQP_ONLY names already logged as unused in this process.
_UNUSED_LOGGED: set[str] = set()


def queue_type(conf: Settings) -> str:
    """The type of every RabbitMQ queue: ``broker_queue_type`` or Celery's names for it,
    whichever are set. Celery can give its default queue and the queues it creates on
    the fly different types; celeriac declares every queue one way, so set names must
    agree rather than one silently winning."""
    given = {name: conf[name] for name in _QUEUE_TYPE_NAMES
             if conf.is_set(name) and conf[name] is not None}
    if len(set(given.values())) > 1:
        listed = ", ".join(f"{name}={value!r}" for name, value in given.items())
        raise ConfigurationError(f"{listed}: celeriac declares every queue of the broker with "
                                 "one type; set broker_queue_type alone")
    return str(next(iter(given.values()), conf.broker_queue_type))


def broker_options(conf: Settings) -> dict[str, Any]:
    """What :meth:`Broker.configure` takes (``brokers.base.OPTION_NAMES``), from the settings.

    With a broker other than RabbitMQ they are unused: those set are logged once (queue
    types that disagree are not checked), and ``broker_use_ssl`` is refused, since
    Celery's Redis transport acts on it and a connection silently left without TLS is
    worse than an error."""
    scheme = urlparse(conf.broker_url).scheme
    amqp = scheme in AMQP_SCHEMES
    if not amqp:
        _check_unused(conf, scheme)
    return {"state_url": conf.broker_state_url, "result_backend": conf.result_backend,
            "queue_type": queue_type(conf) if amqp else conf.broker_queue_type,
            "heartbeat": conf.broker_heartbeat or 0.0,
            "use_ssl": conf.broker_use_ssl, "connection_timeout": conf.broker_connection_timeout,
            "max_priority": conf.task_queue_max_priority}


def _check_unused(conf: Settings, scheme: str) -> None:
    if conf.broker_use_ssl:
        raise ConfigurationError(
            f"broker_use_ssl is for a RabbitMQ broker (amqp://); the {scheme}:// broker does not "
            "use it: for TLS to Redis use a rediss:// URL, its ssl options in the URL's query")
    unused = [name for name in AMQP_ONLY
              if name not in _UNUSED_LOGGED and conf.is_set(name) and conf[name]]
    if unused:
        _UNUSED_LOGGED.update(unused)
        logging.getLogger("celeriac").warning(
            "setting(s) %s: for a RabbitMQ broker (amqp://) only, unused by the %s:// broker",
            ", ".join(unused), scheme)


def _note(exc: BaseException, text: str) -> None:
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(text)


class Celeriac:
    """A celeriac application (``celeriac.Celery`` is the same class).

    ``Celeriac("tasks")`` with nothing else keeps messages and results in
    ``./celeriac.db`` (SQLite): nothing to install to get started. ``broker=``
    and ``backend=`` take URLs; any other keyword is a setting (see
    :mod:`celeriac.settings`). Celery's constructor arguments mean what they mean
    in Celery: ``include=`` (modules imported at :meth:`finalize`), ``changes=``
    (more settings), ``config_source=`` (:meth:`config_from_object` at once, with
    ``config_source_silent=``), ``namespace=`` (its default namespace);
    ``set_as_current=True`` (the default) makes it the current app (:mod:`celeriac._state`:
    ``current_app``, what ``@shared_task`` tasks use); ``loader`` and ``fixups`` are checked by
    :func:`celeriac.config.check_arguments`. Settings given here win over those of a
    config object, as in Celery. Every app gets the ``@shared_task`` tasks of the process.
    """

    def __init__(self, main: str | None = None, *, broker: str | None = None,
                 backend: str | None = None, include: Sequence[str] | None = None,
                 task_cls: type[Task[Any, Any]] | None = None,
                 config_source: Any = None, config_source_silent: bool = False,
                 namespace: str | None = None, changes: Mapping[str, Any] | None = None,
                 set_as_current: bool | None = None, loader: Any = None, fixups: Any = None,
                 **settings: Any) -> None:
        from celeriac.config import check_arguments, checked_settings
        from celeriac.signals import Signal

        check_arguments(settings, loader=loader, fixups=fixups)
        self.main = main
        #: Whether the constructor made this the current app (Celery's flag).
        self.set_as_current = True if set_as_current is None else bool(set_as_current)
        #: Default ``namespace`` of :meth:`config_from_object` (``"CELERY"`` for Django).
        self.namespace = namespace
        #: The class ``@app.task`` builds tasks from, unless a task gives ``base=``.
        self.Task: type[Task[Any, Any]] = task_cls or Task
        #: Sent once, with ``source=app.conf``, when the app is first used (its broker or
        #: backend opened, a task sent, a worker started): after module-level code
        #: connected to it, as in Celery.
        self.on_after_configure = Signal(name="app.on_after_configure", providing_args={"source"})
        #: Sent once when the app's tasks are final: ``celeriac worker`` and each worker
        #: process call :meth:`finalize` once they imported the app.
        self.on_after_finalize = Signal(name="app.on_after_finalize")
        self._configured = False
        self._finalized = False
        self._middleware: Pipeline | None = None
        self.conf = Settings()
        # Celery's order: changes=, then broker=/backend=/include=, then setting keywords.
        given = dict(changes or {})
        given.update({name: value for name, value in (
            ("broker_url", broker), ("result_backend", backend), ("include", include))
            if value is not None})
        given.update(settings)
        self.conf.update(checked_settings(given))
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: This app's task for each ``@shared_task`` declaration (:mod:`celeriac._state`).
        self.shared_tasks: dict[_state.SharedTaskEntry, Task[Any, Any]] = {}
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._broker: Broker | None = None
        self._backend: ResultBackend | None = None
        #: Entries added by :meth:`add_periodic_task`, beside the ``beat_schedule`` setting.
        self.periodic_tasks: dict[str, dict[str, Any]] = {}
        #: ``autodiscover_tasks`` calls waiting for :meth:`finalize`.
        self._discoveries: list[Discovery] = []
        if config_source is not None:
            self.config_from_object(config_source, silent=config_source_silent)
        if self.set_as_current:
            self.set_current()
        from celeriac.contrib.django.fixup import install as django_fixup

        django_fixup(self, fixups, custom_task_cls=task_cls is not None)
        from celeriac.canvas.maps import register_builtins

        register_builtins(self)  # celery.map, celery.starmap: what task.map() messages run
        from celeriac.canvas.replace import register_builtins as register_replace

        register_replace(self)  # celery.accumulate, celeriac.replace_failed: Task.replace's
        _state.register_app(self)  # last: shared tasks are built with the final task_cls

    def __repr__(self) -> str:
        return f"<Celeriac {self.main or '__main__'} broker={self.conf.broker_url}>"

    # -- configuration ------------------------------------------------------------------
    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> bool:
        """Read settings from ``obj``, as Celery does: a module path (``"celeryconfig"``,
        ``"proj.celeryconfig"``), ``"pkg.mod:attr"`` or ``"pkg.mod.attr"``, a module, a
        class, an object or a mapping. ``namespace="CELERY"`` reads only ``CELERY_``-prefixed
        names (Django's settings) and strips the prefix.

        Returns False when ``silent`` and ``obj`` cannot be imported, else True. The object is
        read at once (Celery waits for the first use of ``conf`` unless ``force=True``), so a
        mistake in it raises here. It replaces the object read by an earlier call; settings
        given in code (constructor keywords, ``conf.update``) still win over it.
        """
        from celeriac.config import read

        self.namespace = namespace or self.namespace
        values = read(obj, self.namespace, silent)
        if values is None:
            return False
        self.conf.load_source(values)
        return True

    def config_from_envvar(self, variable_name: str, silent: bool = False,
                           force: bool = False) -> bool:
        """:meth:`config_from_object` with the module path in the environment variable
        ``variable_name``; an unset variable raises unless ``silent`` (then False)."""
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return False
            raise ConfigurationError(
                f"the environment variable {variable_name!r} is not set; it must name the "
                "module (or object) to read the configuration from")
        return self.config_from_object(module_name, silent=silent, force=force)

    def set_current(self) -> None:
        """Make this the current app of this thread (``current_app``, shared tasks)."""
        _state.set_current_app(self)

    def set_default(self) -> None:
        """Make this the default app of the process: the current app of every thread that
        has not set one (the worker sets its app so, for its pool's threads)."""
        _state.set_default_app(self)

    # -- tasks ------------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, *, bind: Literal[True], **options: Any
             ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...

    @overload
    def task(self, *, bind: Literal[False] = False, **options: Any
             ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, *fn: Callable[..., Any], **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``."""
        if len(fn) > 1 or (fn and options) or (fn and not callable(fn[0])):
            raise ConfigurationError("use @app.task or @app.task(option=value, ...)")
        checked = TaskOptions.check(options)

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            return self.add_task(func, checked)

        return register(fn[0]) if fn else register

    def add_task(self, func: Callable[..., Any], options: TaskOptions, *,
                 keep_existing: bool = False) -> Task[Any, Any]:
        """Build and register the task of ``func`` (what ``@app.task`` does once its options
        are checked). Another function under the same name is an error, or with
        ``keep_existing`` (a shared task, Celery's behaviour) leaves the registered task."""
        task: Task[Any, Any] = (options.base or self.Task)(self, func, options)
        existing = self.tasks.get(task.name)
        if existing is not None and existing.fn is not func and (
                getattr(existing.fn, "__code__", None) is not getattr(func, "__code__", None)):
            if keep_existing:
                return existing
            raise ConfigurationError(f"two different functions registered as task {task.name!r}")
        self.tasks[task.name] = task
        return task

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(f"no task named {name!r} is registered"
                                f"{suggest(name, self.tasks)}") from None

    @property
    def current_task(self) -> Task[..., Any] | None:
        """The task running in this thread or greenlet, or None (Celery's
        ``app.current_task``; ``celeriac.current_task`` is the same, as a proxy)."""
        return current_task_var.get()

    # -- hooks ---------------------------------------------------------------------------
    @property
    def middleware(self) -> Pipeline:
        """The hook pipeline of this process's producer side (``before_task_publish`` and
        friends); a worker process builds its own on top (:mod:`celeriac.middleware`)."""
        if self._middleware is None:
            from celeriac.middleware import producer_pipeline

            self._middleware = producer_pipeline(self)
        return self._middleware

    @property
    def control(self) -> Control:
        """Remote control of the worker nodes, as in Celery: ``app.control.inspect().active()``,
        ``app.control.revoke(task_id)``, ``app.control.broadcast(...)`` (:mod:`celeriac.control`)."""
        from celeriac.control import Control

        return Control(self)

    def bugreport(self) -> str:
        """What a bug report needs (Celery's ``app.bugreport()``): versions and the settings
        set, secrets masked; the text ``celeriac report`` prints."""
        from celeriac.cli.report import report_text

        return report_text(self)

    def configured(self) -> None:
        """Send ``on_after_configure`` if it was not sent yet (the app is being used).

        Once per process even when threads race to first use; the flag is set before
        the receivers run, so a receiver may use the app (send a task) itself.
        """
        if self._configured:
            return
        with self._lock:
            if self._configured:
                return
            self._configured = True
        self.on_after_configure.send(sender=self, source=self.conf)

    def finalize(self) -> None:
        """Make the app's tasks final: send ``on_after_configure`` if it was not sent yet,
        import the ``imports`` and ``include`` modules (their tasks register), then send
        ``on_after_finalize``, once.

        ``celeriac worker`` and each worker process call it once they loaded the app, so
        an app that names its task modules in ``include=`` (rather than importing them)
        has them everywhere tasks run; a producer that needs them calls it itself. An
        import that fails raises here and leaves the app unfinalized.
        """
        self.configured()
        if self._finalized:
            return
        self.import_default_modules()
        with self._lock:
            if self._finalized:
                return
            self._finalized = True
        self.on_after_finalize.send(sender=self)

    def import_default_modules(self) -> list[ModuleType]:
        """Import the ``autodiscover_tasks`` modules, then ``imports``, then ``include``
        (Celery's order: it discovers on the ``import_modules`` signal, sent first);
        already imported modules are not imported again."""
        from celeriac.config import import_modules

        return import_modules(self, [*self.conf.imports, *self.conf.include],
                              discoveries=list(self._discoveries))

    def autodiscover_tasks(self, packages: Packages = None, related_name: str | None = "tasks",
                           force: bool = False) -> None:
        """Import ``<package>.tasks`` (``related_name``) of each package that has one, when
        the app is finalized, as Celery does (:mod:`celeriac.discovery`).

        ``packages`` is a list of package names or a callable returning one, called at that
        moment (Django: ``lambda: settings.INSTALLED_APPS``); None means Django's installed
        apps when Django is configured, else nothing. ``force=True`` imports at once, and
        so does a call made after the app was finalized.
        """
        from celeriac.discovery import Discovery

        discovery = Discovery(packages, related_name)
        if force or self._finalized:
            discovery.run()
        else:
            self._discoveries.append(discovery)

    # -- connections (one set per process, opened on first use) ------------------------
    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._broker = None
            self._backend = None
            self._pid = os.getpid()

    @property
    def broker(self) -> Broker:
        if not self._configured:
            self.configured()
        with self._lock:
            self._check_pid()
            if self._broker is None:
                self._broker = broker_from_url(
                    self.conf.broker_url, max_deliveries=self.conf.broker_max_deliveries,
                    poll_interval=self.conf.broker_poll_interval,
                    pool_limit=self.conf.broker_pool_limit,
                    reconnect_timeout=self.conf.broker_reconnect_timeout,
                    options=broker_options(self.conf))
                self._broker.metrics_retention = float(self.conf.worker_metrics_retention)
            return self._broker

    @property
    def backend(self) -> ResultBackend:
        if not self._configured:
            self.configured()
        with self._lock:
            self._check_pid()
            if self._backend is None:
                self._backend = backend_from_url(self.conf.result_backend,
                                                 expires=self.conf.result_expires,
                                                 index=self.conf.result_index)
            return self._backend

    def close(self) -> None:
        """Close this process's broker and backend connections."""
        with self._lock:
            if self._pid == os.getpid():
                for conn in (self._broker, self._backend):
                    if conn is not None:
                        conn.close()
            self._broker = self._backend = None

    # -- routing and sending ------------------------------------------------------------
    def route(self, name: str, queue: str | None = None) -> str:
        """Queue for task ``name``: explicit ``queue``, then ``task_routes``, then the
        task's own ``queue`` option, then its ``pool`` option (the pool's own queue,
        ``celery.prefork``), then ``task_default_queue``."""
        if queue:
            return queue
        conf = self.conf
        # Unset, the default is an empty dict, copied on every read: not worth one per send.
        routes: dict[str, Any] = conf["task_routes"] if conf.is_set("task_routes") else {}
        target = routes.get(name)
        if target is None:
            for pattern, candidate in routes.items():
                if fnmatch.fnmatchcase(name, pattern):
                    target = candidate
                    break
        if isinstance(target, dict):  # Celery's {"queue": ..., "routing_key": ..., "exchange": ...}
            target = routed_queue(target.get("queue"), target.get("routing_key"),
                                  target.get("exchange"), f"task_routes[{name!r}]")
        if target:
            return str(target)
        task = self.tasks.get(name)
        default = str(conf["task_default_queue"])
        if task is not None and task.options.queue:
            return task.options.queue
        if task is not None and task.options.pool:
            return pool_queue(default, task.options.pool)
        return default

    def send_task(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: Mapping[str, Any] | None = None,
                  **options: Unpack[MessageOptions]) -> AsyncResult[Any]:
        """Send a task by name (it need not be registered here) and return its result handle.

        Takes the options of ``apply_async`` (:class:`celeriac.task.SendOptions`) as
        they are: the task's own options are not applied, it may not even be known here.
        """
        check_send_options(options, "send_task", allowed=MESSAGE_OPTIONS)
        watched = self.middleware.publish_watched()
        task_id, message, envelope = self._prepare(name, args, kwargs, time.time(),
                                                   watched=watched, **options)
        self._publish([message], [envelope] if envelope is not None else [])
        result: AsyncResult[Any] = AsyncResult(task_id, self, name)
        if options.get("add_to_parent", True):
            add_to_parent(result)
        return result

    async def asend_task(self, name: str, args: Sequence[Any] | None = None,
                         kwargs: Mapping[str, Any] | None = None,
                         **options: Unpack[MessageOptions]) -> AsyncResult[Any]:
        """:meth:`send_task` for a coroutine: the send runs on the event loop's executor
        while the loop goes on (:mod:`celeriac.aio.client`; a celeriac addition)."""
        from celeriac.aio.client import run_blocking

        return await run_blocking(self.send_task, name, args, kwargs, **options)

    def _publish(self, messages: list[OutgoingMessage], envelopes: list[Envelope]) -> None:
        """One ``Broker.publish`` call, then the ``after_publish`` hooks when any watch
        (``envelopes`` is empty when nobody does)."""
        self.broker.publish(messages)
        pipeline = self.middleware
        if envelopes:
            pipeline.after_publish(self, envelopes)

    def signature(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: Mapping[str, Any] | None = None,
                  **options: Unpack[SendOptions]) -> Signature[Any]:
        """A signature of a task by name, like ``send_task`` but not sent yet (for ``send_many``
        or a ``group`` of tasks this process does not import). A task registered under
        ``name`` when it is sent gets its own options applied."""
        from celeriac.canvas import Signature

        return Signature(name, args, kwargs, options, app=self)

    def send_many(self, signatures: Iterable[Signature[R]], *, group_id: str | None = None,
                  chunk_size: int | None = BULK_CHUNK_SIZE) -> list[AsyncResult[R]]:
        """Send many tasks in few broker calls and return their results, in order.

        Every message is routed, checked and encoded before the first is published,
        so a bad argument or option anywhere raises and publishes nothing. They then
        go out ``chunk_size`` per ``Broker.publish`` call (one transaction on SQLite,
        one round trip on Redis), each call all-or-nothing; ``chunk_size=None`` sends
        them all in one call, which is what a ``group`` does. Chunks bound the size of
        a transaction or pipeline, not this call's memory: all the encoded messages
        (about 1 KB each) are held until sent, so send millions in slices.

        ``group_id`` goes into every message's ``group`` header (unless its signature's
        resolved options name another ``group``: a chord's header member sent with the
        group that holds the chord). If a publish fails
        after earlier chunks went out, the error carries a note saying how many were
        published; those tasks will run. Like ``send_task`` this always sends:
        ``task_always_eager`` is for ``apply_async``, ``apply_many`` and groups.
        """
        if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
            raise ConfigurationError(f"chunk_size={chunk_size!r}: must be >= 1, or None for one call")
        now = time.time()
        results: list[AsyncResult[R]] = []
        messages: list[OutgoingMessage] = []
        envelopes: list[Envelope] = []
        kept_out: set[int] = set()  # add_to_parent=False
        # Messages are kept whole for the publish hooks only when one watches: thousands
        # of envelopes held until the publish cost more in garbage collection than in
        # building them.
        watched = self.middleware.publish_watched()
        # Signatures of one task with equal options (every one of an apply_many) share
        # one plan: options resolved, routed and checked once; each one's arguments are
        # still checked, and each message gets its own id.
        resolved: tuple[Mapping[str, Any], Task[..., Any] | None, SendPlan] | None = None
        for index, signature in enumerate(signatures):
            if signature.app is not self:
                raise ConfigurationError(f"{signature!r} belongs to {signature.app!r}, not {self!r}: "
                                         "one bulk send goes to one broker")
            try:
                if (resolved is not None and resolved[1] is signature.task is not None
                        and resolved[0] == signature.options):
                    signature.task.check_arguments(signature.args, signature.kwargs)
                    plan = resolved[2]
                else:
                    options: dict[str, Any] = dict(signature.resolved_options())
                    # A message of another group in this call (a chord's header sent with
                    # the group that holds it) names its own.
                    group = options.pop("group") if "group" in options else group_id
                    plan = SendPlan(self, signature.name, now, watched=watched, group=group,
                                    **options)
                    resolved = (signature.options, signature.task, plan)
                task_id, message, envelope = plan.make(signature.args, signature.kwargs)
            except Exception as exc:
                _note(exc, f"raised for message {index} ({signature!r}); nothing was published")
                raise
            results.append(AsyncResult(task_id, self, signature.name))
            if signature.options.get("add_to_parent") is False:
                kept_out.add(index)
            messages.append(message)
            if envelope is not None:
                envelopes.append(envelope)
        self._publish_chunks(messages, envelopes, chunk_size or len(messages))
        if group_id is None:  # a group's tasks are one child: group.apply_async adds it
            for index, result in enumerate(results):
                if index not in kept_out:
                    add_to_parent(result)
        return results

    def _publish_chunks(self, messages: list[OutgoingMessage], envelopes: list[Envelope],
                        size: int) -> None:
        if not envelopes:  # no hook watches: the broker may overlap the chunks
            self.broker.publish_chunks([messages[start:start + size]
                                        for start in range(0, len(messages), size)])
            return
        for start in range(0, len(messages), size):
            try:
                self._publish(messages[start:start + size], envelopes[start:start + size])
            except Exception as exc:
                if start:
                    note_stored(exc, start, len(messages))
                raise

    def _prepare(self, name: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
                 now: float, *, watched: bool = False, **options: Any
                 ) -> tuple[str, OutgoingMessage, Envelope | None]:
        """Route, check and encode one message; send nothing (a :class:`SendPlan
        <celeriac.app.plan.SendPlan>` made once). Returns its task id, the message and,
        when ``watched`` (a publish hook watches), its parts for the hooks."""
        return SendPlan(self, name, now, watched=watched, **options).make(args, kwargs,
                                                                        last=True)

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:
        """A handle on the result of ``task_id``."""
        return AsyncResult(task_id, self)

    # -- periodic tasks -----------------------------------------------------------------
    def add_periodic_task(self, schedule: Any, sig: Any, args: Sequence[Any] = (),
                          kwargs: Mapping[str, Any] | None = None, name: str | None = None,
                          **options: Any) -> str:
        """Add a periodic task, as Celery's (usually from an ``on_after_configure``
        receiver): ``schedule`` is seconds, a timedelta or a :mod:`celeriac.schedules`
        schedule, ``sig`` a signature (``task.s(...)``); ``options`` are send options.
        Returns the entry's name: ``name``, else the signature's repr (the same
        signature added twice is one entry). Checked at once; `celeriac beat` sends it.
        """
        from celeriac.beat.entries import periodic_entry

        key, spec = periodic_entry(self, schedule, sig, args, kwargs, name, **options)
        self.periodic_tasks[key] = spec
        return key

    # -- workers ------------------------------------------------------------------------
    def worker_main(self, argv: Sequence[str] | None = None) -> int:
        """Run ``celeriac worker`` for this app from Python code, e.g.
        ``app.worker_main(["worker", "-P", "threads", "-c", "4"])``; returns the exit code."""
        from celeriac.cli.main import run_for_app

        return run_for_app(self, list(argv or ["worker"]))


#: Celery's name for the app class: ``from celeriac import Celery`` is the same class.
Celery = Celeriac
