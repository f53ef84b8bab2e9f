"""The one settings registry.

Every setting is declared once here with its name, default, environment
variable, validator and documentation. The CLI, ``app.conf`` and the docs all
read this table; nothing else in celeriac reads the environment for settings.
Names follow Celery's lowercase setting names so existing knowledge carries over.

Every name given to :class:`Settings` goes through :func:`canonical_name`, so
Celery's old upper-case names (``BROKER_URL``, ``CELERY_RESULT_BACKEND``) work
everywhere a setting is named, with one ``DeprecationWarning`` per name as in
Celery, and a Celery setting celeriac does not have is refused as such rather
than as "unknown" (Celery's names are in :mod:`celeriac.celery_settings`).
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from celeriac.celery_settings import CELERY_NAMES, OLD_NAMES
from celeriac.exceptions import ConfigurationError, UnknownSettingError
from celeriac.validators import (
    AUTOSCALER,
    BEAT_SCHEDULERS,
    OWN_AUTOSCALER,
    Validator,
    _autoscaler,
    _beat_schedule,
    _beat_scheduler,
    _bool,
    _compression,
    _json_only,
    _log_format,
    _mapping,
    _max_priority,
    _module_list,
    _no_result_compression,
    _non_negative_float,
    _optional,
    _port,
    _positive_float,
    _positive_int,
    _priority,
    _queue_type,
    _serializer,
    _state_url,
    _str,
    _str_list,
    _true_only,
    _use_ssl,
    _with_json,
    _zone,
)


@dataclass(frozen=True)
class Setting:
    """One declared setting."""

    name: str
    default: Any
    doc: str
    validator: Validator = lambda value: value
    env: str | None = None


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("broker_url", "sqlite:///celeriac.db", "Where messages live: memory://, "
                "sqlite:///path.db (default, no server needed), redis://host:port/db (also rediss://, "
                "unix://).", _str, "CELERIAC_BROKER_URL"),
        Setting("result_backend", "sqlite:///celeriac.db", "Where results live: memory://, "
                "sqlite:///path.db, redis://host:port/db.", _str, "CELERIAC_RESULT_BACKEND"),
        Setting("imports", [], "Modules imported when the app is finalized: by `celeriac worker` and "
                "each worker process after they load the app, or by app.finalize(); their "
                "@app.task functions register (Celery's imports).", _module_list),
        Setting("include", [], "More modules imported with imports, after them; Celery(..., "
                "include=[...]) sets it.", _module_list),
        Setting("result_expires", 86400.0, "Seconds a stored result is kept.", _positive_float),
        Setting("result_chord_expires", None, "Seconds a chord's join state (which header "
                "members finished) is kept after its latest member joined; None: "
                "result_expires. Must outlast the slowest header member "
                "(docs/canvas-chords.md).", _optional(_positive_float)),
        Setting("result_index", True, "Keep the task index with the results, for searching "
                "them by name, state and id prefix: `celeriac tasks` and the dashboard's task "
                "search need it (with it off they refuse, naming this setting; a task's detail "
                "by id still works). It costs every store: on Redis the store script also "
                "writes a summary key and adds the id to five sorted sets (2 to 3 times the "
                "server CPU of the record alone: figures in docs/monitoring.md), on SQLite "
                "two more table indexes to update. Off: Redis stores only the record and its "
                "notification; SQLite does not create the two search indexes (a file that "
                "has them keeps them: DROP INDEX results_by_state, results_by_name to save "
                "their cost). Set it alike in every process that stores results: an index "
                "missed by some stores is incomplete (docs/monitoring.md).", _bool),
        Setting("result_extended", False, "Also store each task's arguments, worker host and "
                "queue with its result (AsyncResult.args, .kwargs, .worker, .queue), as Celery's; "
                "the name and retries are stored either way.", _bool),
        Setting("broker_lease_timeout", 30.0, "Seconds a fetched message stays reserved for a worker "
                "that stops renewing its lease (a vanished machine); running tasks renew it.",
                _positive_float, "CELERIAC_BROKER_LEASE_TIMEOUT"),
        Setting("broker_max_deliveries", 5, "Deliveries after which a message that keeps crashing "
                "its worker goes to the dead-letter store.", _positive_int),
        Setting("broker_poll_interval", 0.05, "Longest wait between two looks at an idle broker "
                "that cannot push (SQLite).", _positive_float),
        Setting("broker_pool_limit", 32, "Most connections a process opens to a Redis broker or "
                "result backend; threads and greenlets beyond it wait for a free one.",
                _positive_int),
        Setting("broker_reconnect_timeout", 20.0, "Seconds a producer (.delay(), the CLI) waits out "
                "a lost Redis connection before raising BrokerUnreachable; worker processes "
                "wait for as long as it takes.", _positive_float),
        # -- RabbitMQ (amqp://, amqps://, pyamqp://): docs/rabbitmq.md --
        Setting("broker_state_url", None, "RabbitMQ: where the broker keeps what RabbitMQ "
                "cannot (worker registry, events, control commands, revocations, beat claims, "
                "rate limits, its delivery counts): a redis://, rediss://, unix:// or sqlite:// "
                "URL. None: the result_backend's URL when it is one of those; otherwise the "
                "broker refuses to start, saying to set this.", _optional(_state_url)),
        Setting("broker_queue_type", "quorum", "RabbitMQ: the type celeriac declares every "
                "queue with: quorum (replicated; celeriac's dead letters and delivery limit) "
                "or classic (declared exactly as Celery declares it, so Celery producers and "
                "workers share the queue). Celery's task_default_queue_type and "
                "task_create_missing_queue_type set it too when this is not set (celeriac "
                "has one type for every queue: set to different values they are refused).",
                _queue_type),
        Setting("task_default_queue_type", None, "Celery's name (5.5+) for broker_queue_type "
                "(Celery's default is classic, celeriac's quorum: set it to 'classic' to share "
                "queues with Celery). None: not set.", _optional(_queue_type)),
        Setting("task_create_missing_queue_type", None, "Celery's type for queues created on "
                "the fly: celeriac declares every queue with one type, so it sets "
                "broker_queue_type like task_default_queue_type. None: not set.",
                _optional(_queue_type)),
        Setting("broker_heartbeat", 120.0, "RabbitMQ: seconds between AMQP heartbeats "
                "(Celery's); 0 or None turns them off (a dead peer is then noticed only by "
                "TCP). Sent by a native thread, so a busy task or event loop does not miss "
                "them. The Redis and SQLite brokers have no heartbeats (set there, it is "
                "logged as unused).", _optional(_non_negative_float)),
        Setting("broker_use_ssl", False, "RabbitMQ: TLS for amqp:// (amqps:// has it anyway): "
                "False, True, or a dict of ssl options (ca_certs, certfile, keyfile, "
                "cert_reqs, server_hostname...), as Celery's. A Redis broker takes its TLS "
                "options in its rediss:// URL's query: set there, this is refused.", _use_ssl),
        Setting("broker_connection_timeout", 4.0, "RabbitMQ: seconds to wait for the "
                "connection to the server to open (Celery's); a lost connection is waited "
                "out for broker_reconnect_timeout.", _positive_float),
        Setting("broker_consumer_timeout", 1800.0, "RabbitMQ: the server's consumer_timeout "
                "in seconds (it cannot be read over AMQP: set it to your server's value). "
                "RabbitMQ closes the channel of a delivery unacked for longer, so a worker "
                "refuses a task_time_limit above broker_consumer_timeout - 2 x "
                "broker_lease_timeout, and without one uses that bound as its hard limit.",
                _positive_float),
        Setting("task_queue_max_priority", None, "RabbitMQ: the x-max-priority celeriac "
                "declares classic queues with, as Celery does (set it to the Celery app's "
                "value when sharing queues). Priorities are 0-9 on every broker whatever it "
                "is.", _optional(_max_priority)),
        Setting("task_default_queue", "celery", "Queue for tasks with no queue or route "
                "(Celery's name).", _str),
        Setting("task_default_priority", 0, "Priority 0-9 (9 runs first) for tasks that set none.",
                _priority),
        Setting("task_routes", {}, "Task name (or glob pattern) -> queue name or {'queue': name} (Celery's "
                "{'routing_key': name} names the queue too; an exchange other than '' or "
                "'celery' is refused).",
                _mapping),
        Setting("task_serializer", "json", "How task arguments are encoded: json (with kombu's "
                "markers for datetime, date, time, Decimal, UUID and bytes), msgpack (kombu's; "
                "the msgpack extra), a serializer registered with "
                "celeriac.serialization.register, or pickle; any of them only "
                "if also listed in accept_content.", _serializer),
        Setting("accept_content", ["json"], "Serializers (names or content types) a worker will "
                "decode; add 'pickle' explicitly to accept pickled messages.", _str_list),
        Setting("result_serializer", "json", "How results are stored: JSON with kombu's type "
                "markers, the only choice ('json' is accepted, as Celery configs set it).",
                _json_only),
        Setting("task_compression", None, "Compression of task message bodies, kombu's: gzip "
                "(zlib), bzip2 (bzip) or lzma (xz), or None for none; the compression task "
                "option and apply_async(compression=...) override it. Workers read every one.",
                _compression),
        Setting("result_compression", None, "Celery's compression of stored results: only None "
                "(results are stored uncompressed, as JSON text).", _no_result_compression),
        Setting("result_accept_content", None, "Celery's list of result content types; results "
                "are JSON, so a list must contain 'json' (None: Celery's default).",
                _optional(_with_json)),
        Setting("timezone", None, "Celery's time zone: an IANA name (e.g. 'Europe/London') or "
                "None for UTC. crontab schedules are read in it (across daylight-saving "
                "changes); a naive eta or expires stays UTC whatever it is.", _zone),
        Setting("enable_utc", True, "Celery's switch for UTC: accepted when True (celeriac keeps "
                "times in UTC).", _true_only),
        # -- periodic tasks (celeriac/beat/) --
        Setting("beat_schedule", {}, "Periodic tasks: name -> {'task', 'schedule' (seconds, a "
                "timedelta, schedule() or crontab()), 'args', 'kwargs', 'options' (queue, "
                "priority, expires, ...)}; sent by `celeriac beat` or `worker -B`, each run "
                "once however many beats run (docs/periodic-tasks.md).", _beat_schedule),
        Setting("beat_max_loop_interval", 300.0, "Longest sleep of a beat between two looks "
                "at its schedule (Celery's; a beat also wakes when an entry is due).",
                _positive_float),
        Setting("beat_cron_starting_deadline", None, "Seconds: a crontab run missed by more "
                "than this (no beat was running) is skipped instead of sent late (Celery's).",
                _optional(_positive_float)),
        Setting("beat_scheduler", BEAT_SCHEDULERS[0], "Celery's scheduler class: only its "
                "default (or celeriac.beat:Beat) is accepted; the beat keeps its state in the "
                "broker.", _beat_scheduler),
        Setting("beat_schedule_filename", "celerybeat-schedule", "Celery's state file: "
                "accepted and unused, the last runs live in the broker (the beat logs so).",
                _str),
        Setting("beat_sync_every", 0, "Celery's state-file sync count: accepted and unused, "
                "each run's state is written with its message.", lambda v: int(v)),
        Setting("task_acks_late", True, "Ack after the task finishes (at-least-once); False acks "
                "before it starts (at-most-once).", _bool),
        Setting("task_reject_on_worker_lost", False, "A task past its hard time limit goes back "
                "to the queue (charged a delivery) instead of failing with TimeLimitExceeded. "
                "The messages of a process that dies go back in any case (at-least-once).",
                _bool),
        Setting("task_ignore_result", False, "Do not store results.", _bool),
        # Celery's task option settings (the task options of the same names win).
        Setting("task_acks_on_failure_or_timeout", True, "With acks_late: False dead-letters "
                "the message of a task that failed or timed out instead of acking it (Celery "
                "rejects it without requeue); its FAILURE result is stored either way.", _bool),
        Setting("task_store_errors_even_if_ignored", False, "Tasks that ignore results still "
                "store their failures, retries and revocations.", _bool),
        Setting("task_default_rate_limit", None, "Rate limit of every task without its own "
                "('10/s', '100/m', '1000/h'), enforced across every worker of the broker "
                "(Celery's is per worker process); see docs/rate-limits.md.",
                # Checked by the task option's parser (imported late: task.py imports this module).
                _optional(lambda v: v if __import__("celeriac.task_options", fromlist=["_"])
                          .parse_rate_limit(v) is not None else None)),
        Setting("worker_disable_rate_limits", False, "This worker runs rate-limited tasks "
                "without their limit (other workers keep it, and it logs so at start); "
                "concurrency limits still apply.", _bool),
        Setting("task_track_started", False, "Record a STARTED state when a task begins.", _bool),
        Setting("task_send_sent_event", False, "Producers record a task-sent event in the broker's "
                "event stream for every task message they publish (one broker call per publish "
                "call), for `celeriac events` and dashboards; read when the app first publishes.",
                _bool),
        Setting("task_time_limit", None, "Hard time limit in seconds: the task is killed.",
                _optional(_positive_float)),
        Setting("task_soft_time_limit", None, "Soft time limit in seconds: SoftTimeLimitExceeded "
                "is raised inside the task.", _optional(_positive_float)),
        Setting("task_default_max_retries", 3, "Retries allowed by Task.retry() unless the task "
                "sets max_retries.", _optional(lambda v: int(v))),
        Setting("task_default_retry_delay", 180.0, "Seconds before a retry when none is given.",
                _non_negative_float),
        Setting("task_always_eager", False, "Run tasks locally and at once in apply_async "
                "(for tests); arguments still go through the serializer, as to a worker.", _bool),
        Setting("task_eager_propagates", False, "An eagerly run task (apply(), or under "
                "task_always_eager) that fails re-raises its exception from apply()/delay() "
                "instead of returning a FAILURE result; Task.apply(throw=...) overrides it.", _bool),
        Setting("task_store_eager_result", False, "Store the results of eagerly run tasks in the "
                "result backend, as a worker would (unless the task ignores results).", _bool),
        Setting("worker_pool", "prefork", "Execution pool: solo, threads, prefork, gevent, "
                "eventlet.", _str,
                "CELERIAC_WORKER_POOL"),
        Setting("worker_concurrency", None, "Tasks run at once (default: number of CPUs).",
                _optional(_positive_int)),
        Setting("worker_processes", None, "Worker processes for pools that run many tasks in one "
                "process (threads).", _optional(_positive_int)),
        Setting("worker_prefetch_multiplier", 4, "Messages reserved per concurrency slot by a "
                "node of one worker process; with several processes (prefork, --processes) each "
                "reserves only what it can start, so idle siblings are never starved.",
                _positive_int),
        Setting("worker_send_task_events", False, "Worker processes record task events "
                "(task-received, task-started, task-succeeded, task-failed, task-retried, "
                "task-revoked, task-rejected) in the broker's event stream, in batches, and the "
                "supervisor a worker-heartbeat event on each heartbeat; `celeriac worker -E` "
                "turns it on. See docs/monitoring.md.", _bool),
        Setting("worker_send_metrics", True, "celeriac's own: worker processes count, per "
                "minute and task name, the runs that finished, failed and retried, their "
                "runtimes (a histogram: percentiles) and event loop stalls, and add the counts "
                "to the broker's metric rollups every few seconds (one call): what "
                "`celeriac metrics` and the dashboard show. See docs/monitoring.md.", _bool),
        Setting("worker_metrics_retention", 259200.0, "celeriac's own: seconds the broker "
                "keeps metric rollups (72 hours: one row per minute and task name, expired or "
                "deleted past this age).", _positive_float),
        Setting("worker_max_tasks_per_child", None, "Replace a worker process after this many tasks.",
                _optional(_positive_int)),
        Setting("worker_max_memory_per_child", None, "Replace a worker process whose resident "
                "memory exceeds this many KiB (checked after each task).", _optional(_positive_int)),
        Setting("worker_shutdown_timeout", 30.0, "Seconds running tasks get to finish on a warm "
                "shutdown before the cold one.", _non_negative_float),
        Setting("worker_max_blocking_time", 0.1, "Seconds a task may hold an event loop without "
                "switching before it is reported as blocking (task, id, stack; a `task-blocked` "
                "event): the hub of the gevent and eventlet pools, and the asyncio event loop "
                "of every pool's process (`-P asyncio`, and the one `async def` tasks run on "
                "under the other pools).",
                _positive_float),
        Setting("worker_heartbeat_interval", 2.0, "Seconds between worker heartbeats in the "
                "broker. A node whose heartbeat is three intervals old is taken for dead: "
                "another node releases the messages it held. Beats write their own heartbeat "
                "at the same interval (the dashboard's Periodic page shows them).",
                _positive_float),
        Setting("worker_autoscale_keepalive", 30.0, "celeriac's own: with `worker --autoscale "
                "MAX,MIN`, seconds without a task starting (or the pool growing) before the pool "
                "shrinks towards the load (Celery's AUTOSCALE_KEEPALIVE environment variable, "
                "read here too).", _positive_float, "AUTOSCALE_KEEPALIVE"),
        Setting("worker_autoscaler", AUTOSCALER, "Celery's autoscaler class: only its default "
                f"({AUTOSCALER!r}) or {OWN_AUTOSCALER!r} is accepted, both meaning celeriac's "
                "built-in autoscaler (`worker --autoscale`); a class of your own is refused, "
                "since Celery's Autoscaler API (a thread driving a billiard pool) does not exist "
                "here.", _autoscaler),
        Setting("worker_revoke_expires", 10800.0, "Seconds a revoked task id is kept in the "
                "broker: a message of that task fetched within this time is not run (Celery's "
                "CELERY_WORKER_REVOKE_EXPIRES, 3 hours).", _positive_float),
        Setting("worker_log_format", "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
                "Format of the worker's log lines (Celery's; the process is MainProcess for "
                "the supervisor, Worker-N for worker process N).", _log_format),
        Setting("worker_task_log_format", "[%(asctime)s: %(levelname)s/%(processName)s] "
                "%(task_name)s[%(task_id)s]: %(message)s", "Format of the lines task loggers "
                "(celeriac.utils.log.get_task_logger) write in a worker: %(task_name)s and "
                "%(task_id)s are the running task's.", _log_format),
        Setting("worker_log_datefmt", None, "strftime format of %(asctime)s in "
                "worker_log_format (None: logging's default, 2026-01-31 12:00:00,123).",
                _optional(_str)),
        Setting("worker_task_log_datefmt", None, "strftime format of %(asctime)s in "
                "worker_task_log_format (None: logging's default).", _optional(_str)),
        Setting("worker_hijack_root_logger", True, "The worker removes the root logger's "
                "handlers before adding its own (and the celeriac and celeriac.task loggers'); "
                "False keeps handlers the app configured, and the worker adds one only to a "
                "logger that has none.", _bool),
        # -- the dashboard (celeriac.dashboard, docs/dashboard.md) --------------------------
        Setting("dashboard_address", "127.0.0.1", "Address `celeriac dashboard` listens on. Any "
                "other than a loopback one needs a password hash configured, or it refuses to "
                "start.", _str, "CELERIAC_DASHBOARD_ADDRESS"),
        Setting("dashboard_port", 5555, "Port of the dashboard (0: one the system picks; the "
                "log says which).", _port, "CELERIAC_DASHBOARD_PORT"),
        Setting("dashboard_admin_password_hash", None, "Hash of the admin password (may act: "
                "purge, revoke), as `celeriac dashboard --hash-password` prints it. With no "
                "hash configured, a one-time login token is printed at start.", _optional(_str),
                "CELERIAC_DASHBOARD_ADMIN_PASSWORD_HASH"),
        Setting("dashboard_viewer_password_hash", None, "Hash of the viewer password (sees every "
                "page, may not act).", _optional(_str), "CELERIAC_DASHBOARD_VIEWER_PASSWORD_HASH"),
        Setting("dashboard_password_file", None, "A file of `admin:HASH` and `viewer:HASH` lines, "
                "read at start (instead of, or besides, the two hash settings).",
                _optional(_str), "CELERIAC_DASHBOARD_PASSWORD_FILE"),
        Setting("dashboard_secret_key", None, "Key that signs session cookies. None: a random "
                "key per process (a restart logs everyone out); set it when several dashboard "
                "processes serve one site.", _optional(_str), "CELERIAC_DASHBOARD_SECRET_KEY"),
        Setting("dashboard_metrics_token", None, "Bearer token of the Prometheus endpoint "
                "/metrics (None: /metrics is off).", _optional(_str),
                "CELERIAC_DASHBOARD_METRICS_TOKEN"),
        Setting("dashboard_certfile", None, "TLS certificate (PEM) of the dashboard; with "
                "dashboard_keyfile it serves https and marks its cookie Secure.", _optional(_str),
                "CELERIAC_DASHBOARD_CERTFILE"),
        Setting("dashboard_keyfile", None, "TLS private key (PEM) of the dashboard.",
                _optional(_str), "CELERIAC_DASHBOARD_KEYFILE"),
        Setting("dashboard_redact_args", False, "Show task arguments as [redacted] on the "
                "dashboard's pages.", _bool, "CELERIAC_DASHBOARD_REDACT_ARGS"),
    ]
}


@dataclass(frozen=True)
class Knob:
    """A Celery tuning knob with no meaning in celeriac: accepted so that a Celery config
    loads, and logged (once per name) when set to a value celeriac does not act like."""

    name: str
    default: Any
    #: Values that describe what celeriac does anyway: set to one of them, no warning.
    harmless: tuple[Any, ...]
    why: str


#: Celery's knobs that celeriac accepts without acting on them (docs/settings.md lists them).
KNOBS = [
    Knob("broker_connection_retry", True, (True,), "celeriac's broker calls always wait out "
         "a lost connection (workers for as long as it takes, producers for "
         "broker_reconnect_timeout)"),
    Knob("broker_connection_retry_on_startup", None, (None, False), "a worker whose broker is "
         "unreachable at start exits with one line; its supervisor (systemd, Kubernetes) "
         "restarts it"),
    Knob("broker_connection_max_retries", 100, (100,), "a producer retries a lost "
         "connection for broker_reconnect_timeout seconds, a worker for as long as it takes"),
    Knob("broker_pool_limit", 10, (10,), "each process keeps the connections it needs"),
    Knob("task_publish_retry", True, (True,), "a producer waits out a lost broker connection "
         "for broker_reconnect_timeout seconds, then raises BrokerUnreachable; "
         "apply_async(retry=, retry_policy=) likewise"),
    Knob("task_publish_retry_policy", {"max_retries": 3, "interval_start": 0, "interval_max": 1,
                                       "interval_step": 0.2},
         ({"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2},),
         "broker_reconnect_timeout bounds how long a producer waits out a lost broker connection"),
    Knob("broker_transport_options", {}, ({},), "kombu's transport options; the lease that "
         "visibility_timeout sets for Celery's Redis transport is broker_lease_timeout"),
    Knob("result_backend_transport_options", {}, ({},), "kombu's transport options"),
    Knob("worker_detect_quorum_queues", True, (True,), "celeriac's RabbitMQ broker always "
         "sets its prefetch per consumer, never the global QoS that quorum queues refuse"),
    Knob("task_create_missing_queues", True, (True,), "a queue exists as soon as a message "
         "or a worker uses it"),
    Knob("result_chord_join_timeout", 3.0, (3, 3.0), "a chord's body is sent by the header "
         "member that completes it, nobody joins or polls (docs/canvas.md)"),
    Knob("result_chord_retry_interval", 1.0, (1, 1.0), "there is no chord_unlock task "
         "polling the backend; a chord completes when its last member joins"),
    Knob("worker_log_color", None, (None, False), "celeriac's log lines are never coloured"),
    Knob("worker_cancel_long_running_tasks_on_connection_loss", False, (False,), "a task keeps "
         "running through a lost connection; its lease and fencing token decide who acks it"),
    Knob("worker_lost_wait", 10.0, (10, 10.0), "the supervisor sees a worker process die at "
         "once, through its status pipe"),
    Knob("worker_proc_alive_timeout", 4.0, (4, 4.0), "worker processes report ready on their "
         "status pipe; a slow start is retried with backoff"),
]

_KNOBS_WARNED: set[str] = set()


def _knob(knob: Knob) -> Validator:
    def accept(value: Any) -> Any:
        if value not in knob.harmless and knob.name not in _KNOBS_WARNED:
            _KNOBS_WARNED.add(knob.name)
            logging.getLogger("celeriac").warning(
                "setting %s=%r is accepted for compatibility with Celery but has no effect in "
                "celeriac: %s", knob.name, value, knob.why)
        return value

    return accept


for _k in KNOBS:
    SETTINGS[_k.name] = Setting(_k.name, _k.default, f"Celery's knob, accepted and not acted "
                                f"on (a value celeriac does not act like is logged, once): {_k.why}.",
                                _knob(_k))


def suggest(name: str, choices: Iterator[str] | list[str] | dict[str, Any]) -> str:
    """Return ' (did you mean 'x'?)' for the closest of ``choices``, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: Celery's settings celeriac does not support, by name prefix (a part ending in ``_``) or
#: part of the name: the feature they belong to, so that the error says what is missing
#: rather than "unknown" (``beat_`` is a prefix: ``broker_heartbeat_checkrate`` is not beat's).
_FEATURES = [
    ("beat_", "beat's remote control (Celery 5.6; celeriac's beat is steered by its schedule)"),
    ("azureblockblob_", "the Azure Block Blob result backend"),
    ("cassandra_", "the Cassandra result backend"),
    ("cosmosdbsql_", "the Cosmos DB result backend"),
    ("couchbase_", "the Couchbase result backend"),
    ("arangodb_", "the ArangoDB result backend"),
    ("mongodb_", "the MongoDB result backend"),
    ("elasticsearch_", "the Elasticsearch result backend"),
    ("database_", "the SQLAlchemy result backend"),
    ("cache_backend", "the cache result backend"),
    ("s3_", "the S3 result backend"),
    ("gcs_", "the Google Cloud Storage result backend"),
    ("redis_", "the Redis result backend's connection options (celeriac's are in the URL)"),
    ("security_", "message signing (the auth serializer)"),
    ("event_", "AMQP event exchanges and queues (celeriac's events are a stream in the broker)"),
    ("control_", "AMQP control exchanges and queues (celeriac's commands go through the broker)"),
    ("chord", "errbacks on a chord's header members (a chord's errbacks go to its body)"),
    ("exchange", "AMQP exchanges and routing keys"),
    ("routing_key", "AMQP exchanges and routing keys"),
    ("queue_type", "AMQP queue types"),
    ("task_queues", "declared AMQP queues (celeriac queues exist when used; see task_routes)"),
]

#: Old names already warned about in this process (Celery warns once per name too).
_WARNED_OLD: set[str] = set()
_WARN_LOCK = threading.Lock()


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised by our caller at the first frame
    outside celeriac (and the standard library's frozen ``MutableMapping.update``): the
    user's ``conf.update``, constructor or ``config_from_object`` call."""
    level, frame = 2, sys._getframe(2)
    while frame.f_back is not None and frame.f_code.co_filename.startswith((_PACKAGE_DIR, "<frozen")):
        level, frame = level + 1, frame.f_back
    return level


def unsupported(name: str, celery_name: str | None = None) -> ConfigurationError:
    """The error for a Celery setting ``name`` (or old name of ``celery_name``) celeriac lacks."""
    new = celery_name or name
    feature = next((text for part, text in _FEATURES
                    if (new.startswith(part) if part.endswith("_") else part in new)), None)
    old = f" (Celery's old name for {new!r})" if celery_name else ""
    return ConfigurationError(
        f"{name!r}{old} is a Celery setting that celeriac does not support"
        f"{f': it belongs to {feature}' if feature else ''}; remove it (see docs/migrating.md)")


def unknown(name: str) -> UnknownSettingError:
    """The error for a name that is neither celeriac's nor Celery's, with the nearest one."""
    return UnknownSettingError(f"unknown setting {name!r}{suggest_setting(name)}")


def suggest_setting(name: str, cutoff: float = 0.6) -> str:
    """A did-you-mean hint among every setting name of its case (old names for upper case)."""
    if name.isupper():
        if name.lower() in SETTINGS or name.lower() in CELERY_NAMES:
            return f" (did you mean {name.lower()!r}?)"
        choices: list[str] = list(OLD_NAMES)
    else:
        choices = [*SETTINGS, *CELERY_NAMES]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_known(name: str) -> bool:
    """True for celeriac's names and all of Celery's (current or old), supported or not."""
    return name in SETTINGS or name in CELERY_NAMES or name in OLD_NAMES


def canonical_name(name: str) -> str:
    """The registry name for ``name``: itself, or the current name of a Celery old name.

    An old name warns once per process (``DeprecationWarning``, as Celery does). A Celery
    setting celeriac does not support raises :class:`ConfigurationError` saying so; any
    other name raises :class:`UnknownSettingError` with a suggestion.
    """
    if name in SETTINGS:
        return name
    new = OLD_NAMES.get(name)
    if new is not None:
        if new not in SETTINGS:
            raise unsupported(name, new)
        with _WARN_LOCK:
            first = name not in _WARNED_OLD
            _WARNED_OLD.add(name)
        if first:
            warnings.warn(f"The {name!r} setting is Celery's old name for {new!r}: use {new!r}",
                          DeprecationWarning, stacklevel=_user_stacklevel())
        return new
    if name in CELERY_NAMES:
        raise unsupported(name)
    raise unknown(name)


def validate(name: str, value: Any) -> Any:
    """Check one setting by name (see :func:`canonical_name`) and return its normalised value."""
    setting = SETTINGS[canonical_name(name)]
    try:
        return setting.validator(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"setting {setting.name}={value!r}: {exc}") from None


class Settings(MutableMapping[str, Any]):
    """An app's configuration, in layers: registry defaults, the environment, a config
    object (``app.config_from_object``), then code (constructor keywords, ``update``,
    assignment), each above the one before.

    Values set in code win over the config object whatever the order of the calls, as in
    Celery, where a config object is read after the app's own keywords and under them.
    Reads and writes are checked against :data:`SETTINGS`; a misspelt name raises
    :class:`UnknownSettingError` with a suggestion instead of being ignored.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, **overrides: Any) -> None:
        env = os.environ if environ is None else environ
        self._env: dict[str, Any] = {}
        self._source: dict[str, Any] = {}
        self._values: dict[str, Any] = {}
        #: The three layers merged, rebuilt on every write: reads (``conf.x`` on each
        #: send) cost one lookup, as before there were layers.
        self._merged: dict[str, Any] = {}
        for setting in SETTINGS.values():
            if setting.env and env.get(setting.env):
                self._env[setting.name] = validate(setting.name, env[setting.env])
        self._merge()
        self.update(overrides)

    def _merge(self) -> None:
        self._merged = {**self._env, **self._source, **self._values}

    def load_source(self, values: Mapping[str, Any]) -> None:
        """Replace the config-object layer with ``values`` (names checked and resolved as
        everywhere): a second ``config_from_object`` replaces the first, as in Celery."""
        checked = {canonical_name(name): value for name, value in values.items()}
        self._source = {name: validate(name, value) for name, value in checked.items()}
        self._merge()

    def __getitem__(self, name: str) -> Any:
        merged = self._merged
        if name in merged:
            return merged[name]
        if name in _FIXED_DEFAULTS:  # a registry name nobody set: every send reads a few
            return _FIXED_DEFAULTS[name]
        name = canonical_name(name)
        if name in merged:
            return merged[name]
        default = SETTINGS[name].default
        return list(default) if isinstance(default, list) else (
            dict(default) if isinstance(default, dict) else default)

    def __setitem__(self, name: str, value: Any) -> None:
        name = canonical_name(name)
        self._values[name] = validate(name, value)
        self._merge()

    def __delitem__(self, name: str) -> None:
        """Forget the value code gave ``name``: the config object's, the environment's or
        the default shows again."""
        self._values.pop(canonical_name(name), None)
        self._merge()

    def __iter__(self) -> Iterator[str]:
        return iter(SETTINGS)

    def __len__(self) -> int:
        return len(SETTINGS)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except ConfigurationError as exc:  # unknown, or a Celery setting celeriac lacks
            raise AttributeError(str(exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def is_set(self, name: str) -> bool:
        """True when the environment, a config object or code gave ``name`` a value."""
        return canonical_name(name) in self._merged


#: The defaults that are not lists or dicts, by registry name: a read of one that nobody
#: set returns it without resolving the name (mutable defaults are copied on each read).
_FIXED_DEFAULTS: dict[str, Any] = {
    name: setting.default for name, setting in SETTINGS.items()
    if not isinstance(setting.default, list | dict)}


def markdown() -> str:
    """``docs/settings.md``, generated from the registry (a test keeps the file in sync)."""
    lines = [
        "# Settings",
        "",
        "Generated from `celeriac/settings.py` by "
        "`python -c 'import celeriac.settings as s; print(s.markdown(), end=\"\")'`.",
        "Set them in code (`Celeriac(..., name=value)` or `app.conf.update(name=value)`) or in a",
        "config object (`app.config_from_object(\"proj.celeryconfig\")`, see migrating.md). Code",
        "wins over the config object, which wins over the environment variable (where there is",
        "one), which wins over the default.",
        "Celery's old upper-case names (`BROKER_URL`, `CELERY_RESULT_BACKEND`, ...) are read as",
        "the names below with a DeprecationWarning, once per name. A Celery setting celeriac does",
        "not support is an error that says so; a misspelt name is an error that suggests the",
        "right one.",
        "",
        "| setting | default | environment | meaning |",
        "|---|---|---|---|",
    ]
    for setting in SETTINGS.values():
        env = f"`{setting.env}`" if setting.env else ""
        lines.append(f"| `{setting.name}` | `{setting.default!r}` | {env} | {setting.doc} |")
    return "\n".join(lines) + "\n"
