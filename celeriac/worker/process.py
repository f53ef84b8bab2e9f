"""The main function of one worker process (started by the supervisor).

Order matters: the pool prepares the process (a green pool monkey-patches here)
before anything else is imported -- this module imports only ``os``, ``sys``
and the spec at the top, because even ``logging`` imports ``threading`` -- then
the user's app, logging (after the app, so that ``setup_logging`` receivers the
app connects decide it), ``app.finalize()`` (``on_after_configure``,
``on_after_finalize``), the garbage collector is set for a long run (everything made so
far frozen: :mod:`celeriac.worker.heap`), the pool and the consumer start. SIGTERM asks for a
warm shutdown; SIGINT is ignored, because Ctrl-C reaches the whole process
group and the supervisor decides what it means.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from celeriac.worker.spec import WorkerSpec

if TYPE_CHECKING:
    from celeriac.settings import Settings


def configure_logging(spec: WorkerSpec, conf: Settings) -> None:
    """Logging of this process, with Celery's logging signals and the app's logging settings
    (:mod:`celeriac.worker.logs`): to stderr, or to ``--logfile`` with this process's index
    in ``%i``/``%I``; the process is ``Worker-<index>`` in ``%(processName)s``."""
    from celeriac.worker import logs

    logs.name_process(spec.index)
    logs.configure_logging(conf, spec.loglevel,
                           logs.process_logfile(spec.logfile, spec.node, spec.index))


def main() -> int:
    spec = WorkerSpec.from_env()
    from celeriac.pools import get_pool

    pool_class = get_pool(spec.pool)
    pool_class.prepare_process()

    import logging
    import signal
    from types import FrameType

    os.chdir(spec.workdir)
    from celeriac.contrib.django.fixup import setup_before_app

    setup_before_app()  # DJANGO_SETTINGS_MODULE set: django.setup(), patched, before the app

    from celeriac.loader import load_app
    from celeriac.worker import heap
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.status import StatusWriter

    app = load_app(spec.app)
    app.set_current()  # what current_app and shared tasks use, in every thread of the pool
    app.set_default()
    app.conf.update(spec.settings)
    configure_logging(spec, app.conf)
    log = logging.getLogger("celeriac.worker")
    if pool_class.imported_too_early:
        log.warning("modules %s were imported before %s patching (from sitecustomize, a .pth "
                    "file or PYTHONSTARTUP?); objects created from them are not cooperative",
                    ", ".join(pool_class.imported_too_early), pool_class.name)
    app.finalize()
    app.broker.retry_for(None)
    pool = pool_class(spec.concurrency, app.conf)
    status = StatusWriter(spec.status_fd)
    pool.on_stall = status.stall
    consumer = Consumer(app, pool, spec, status)
    if spec.command_fd >= 0:  # remote control: what the supervisor asks of this process
        from celeriac.middleware.commands import CommandListener
        from celeriac.worker.commands import CommandReader

        consumer.pipeline.add(CommandListener(consumer, CommandReader(spec.command_fd),
                                              spec.time_limits))

    def on_term(signum: int, frame: FrameType | None) -> None:
        consumer.stop("warm shutdown requested")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    heap.settle(spec.concurrency)  # the collector set for a long run (celeriac.worker.heap)
    pool.start()
    exitcode = 1
    try:
        pool.run(consumer.run)
        exitcode = 0
    finally:
        consumer.pipeline.process_stopping(app, exitcode)
        pool.stop()
        app.close()
        status.close()
    return exitcode


if __name__ == "__main__":
    sys.exit(main())
